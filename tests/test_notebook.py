"""The quickstart notebook runs end to end (demo world, offline) so it cannot rot."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from activevlm.demo.model import WEIGHTS_PATH

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "quickstart.ipynb"


@pytest.mark.slow
@pytest.mark.skipif(not WEIGHTS_PATH.is_file(),
                    reason=f"demo model weights not present: {WEIGHTS_PATH}")
def test_quickstart_notebook_executes(tmp_path):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    last = nb.cells[-1].outputs
    assert any("image/png" in o.get("data", {}) for o in last)  # the learning curve
    assert any("text/markdown" in o.get("data", {}) for o in last)  # the summary table
