"""The ``activevlm`` command: thin Typer shells over library functions.

Each command group lives in its own module under ``activevlm/cli`` and is registered here.
"""

from __future__ import annotations

import os

import typer

from activevlm.cli.errors import guard_commands, set_debug

# Pretrained tags must never hang on a hub lookup on offline machines; users with a network
# can still export HF_HUB_OFFLINE=0.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

app = typer.Typer(
    name="activevlm",
    help="Choose which unlabelled images to label next when adapting a CLIP/SigLIP model.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def _options(debug: bool = typer.Option(
        False, "--debug", help="After an error, also print the underlying library messages "
        "(the user paragraph leaves them out).")) -> None:
    set_debug(debug)


# --- command registration (one line per module) ---
from activevlm.cli import embed as _embed  # noqa: E402

app.command("embed")(_embed.embed)

from activevlm.cli import vilu as _vilu  # noqa: E402

app.add_typer(_vilu.app, name="vilu")

from activevlm.cli import demo as _demo  # noqa: E402

app.command("demo")(_demo.demo)

from activevlm.cli import runs as _runs  # noqa: E402

app.add_typer(_runs.labels_app, name="labels")
app.command("status")(_runs.status)

from activevlm.cli import posterior as _posterior  # noqa: E402

app.add_typer(_posterior.app, name="posterior")

from activevlm.cli import zeroshot as _zeroshot  # noqa: E402

app.command("zeroshot")(_zeroshot.zeroshot)

from activevlm.cli import select as _select  # noqa: E402

app.command("select")(_select.select)

from activevlm.cli import bench as _bench  # noqa: E402
from activevlm.cli import finetune as _finetune  # noqa: E402
from activevlm.cli import loop as _loop  # noqa: E402

app.command("finetune")(_finetune.finetune)
app.command("loop")(_loop.loop)
app.command("bench")(_bench.bench)
app.command("plot")(_bench.plot)

guard_commands(app)  # user errors: one paragraph, exit status 1, no traceback

if __name__ == "__main__":
    app()
