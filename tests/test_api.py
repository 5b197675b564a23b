"""``import activevlm as avl``: one import for the workflow, and it stays cheap."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import activevlm as avl


def test_import_is_cheap():
    code = ("import sys, activevlm; heavy = [m for m in ('torch', 'pandas', 'faiss', "
            "'activevlm.runs', 'activevlm.bayes') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("name", [n for n in avl.__all__ if n != "__version__"])
def test_every_name_is_the_library_object(name):
    module = importlib.import_module(f"activevlm.{avl._EXPORTS[name]}")
    assert getattr(avl, name) is getattr(module, name)
    assert name in dir(avl)


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no_such_thing"):
        avl.no_such_thing  # noqa: B018
