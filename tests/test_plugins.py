"""Plugins: registries import an ``activevlm.plugins`` entry point only for a name they lack,
and report a plugin that fails to import by name."""

from __future__ import annotations

import json
import sys
import tomllib
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest
import torch

from activevlm.data import available_layouts, load_dataset, registry
from activevlm.demo.model import WEIGHTS_PATH
from activevlm.models import default_checkpoint, load_vlm, register_model_config
from activevlm.models import registry as model_registry
from activevlm.utils import plugins

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = Path(__file__).parent / "fixtures" / "model_configs"
PLUGIN_SOURCE = '''
from pathlib import Path
from activevlm.data import register_layout
from activevlm.models import register_default_checkpoint, register_model_config

CALLS = []

@register_layout("plugtest", takes_path=False)
def load(*, size: int = 1):
    CALLS.append(size)
    return f"dataset of {size}"

register_model_config(Path(__file__).with_name("plugtest-clip.json"))
register_default_checkpoint("plugtest-clip", lambda: Path(__file__).with_name("weights.pt"))
'''


@pytest.fixture
def fake_plugins(monkeypatch, tmp_path):
    """Entry points {name: module} made of modules written into ``tmp_path``; registries,
    plugin state and newly imported plugin modules are put back afterwards."""

    def install(modules: dict[str, str]) -> None:
        points = [EntryPoint(name, module, plugins.GROUP) for name, module in modules.items()]
        monkeypatch.setattr(plugins, "entry_points",
                            lambda group: [p for p in points if p.group == group])

    install({})
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(plugins, "_loaded", set())
    monkeypatch.setattr(plugins, "_failed", {})
    monkeypatch.setattr(registry, "_LAYOUTS", dict(registry._LAYOUTS))
    monkeypatch.setattr(model_registry, "_DEFAULT_CHECKPOINTS",
                        dict(model_registry._DEFAULT_CHECKPOINTS))
    imported = set(sys.modules)
    yield install
    for name in ("plugtest_plugin", "plugtest_broken", "activevlm.demo.plugin"):
        if name not in imported:  # registered into the copies only: import it again later
            sys.modules.pop(name, None)


def test_a_plugin_is_imported_on_an_unknown_name_and_registers_layout_and_model(
        fake_plugins, tmp_path):
    cfg = json.loads((CONFIGS / "tiny-clip.json").read_text())
    (tmp_path / "plugtest-clip.json").write_text(json.dumps(cfg))
    register_model_config(CONFIGS / "tiny-clip.json")
    source = load_vlm("tiny-clip", device="cpu", seed=7)
    torch.save(source.model.state_dict(), tmp_path / "weights.pt")
    (tmp_path / "plugtest_plugin.py").write_text(PLUGIN_SOURCE)
    fake_plugins({"plugtest": "plugtest_plugin"})

    with pytest.raises(FileNotFoundError, match="no images"):
        load_dataset(f"folder:{tmp_path}")  # a known layout: no plugin import
    assert "plugtest_plugin" not in sys.modules
    assert load_dataset("plugtest", size=3) == "dataset of 3"
    assert sys.modules["plugtest_plugin"].CALLS == [3]

    vlm = load_vlm("plugtest-clip", device="cpu")  # neither pretrained nor checkpoint
    assert vlm.checkpoint == tmp_path / "weights.pt"
    assert vlm.model_id.startswith("plugtest-clip@sha256:")
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert torch.equal(vlm.encode_image(pixels), source.encode_image(pixels))


def test_a_plugin_that_fails_to_import_is_named_in_the_error(fake_plugins, tmp_path):
    (tmp_path / "plugtest_broken.py").write_text("raise RuntimeError('half installed')\n")
    fake_plugins({"broken": "plugtest_broken"})
    with pytest.raises(ValueError, match=r"unknown dataset spec 'nope'.*'broken' "
                                         r"\(plugtest_broken: RuntimeError: half installed\)"):
        load_dataset("nope")
    with pytest.raises(ValueError, match=r"unknown model 'nope-model'.*'broken'"):
        load_vlm("nope-model", device="cpu")


def test_without_plugins_an_unknown_name_says_how_plugins_are_found(fake_plugins):
    fake_plugins({})
    with pytest.raises(ValueError, match="activevlm.plugins' entry points"):
        load_dataset("nope")


def test_pyproject_declares_the_demo_plugin_and_it_registers_the_demo(fake_plugins):
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]
    assert declared[plugins.GROUP] == {"demo": "activevlm.demo.plugin"}
    fake_plugins(declared[plugins.GROUP])
    assert plugins.load_plugins() == {}  # imports (or finds imported) activevlm.demo.plugin
    assert plugins.load_plugins() == {}
    assert default_checkpoint("activevlm-demo") == WEIGHTS_PATH
    assert "demo" in available_layouts()
