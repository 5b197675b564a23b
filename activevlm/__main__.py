"""``python -m activevlm``: the same as the ``activevlm`` command."""

from activevlm.cli.main import app

app(prog_name="activevlm")
