"""Model architecture configs: open_clip's built-ins plus local JSON files registered here,
and default checkpoints: the weights a model name loads with when none are given.

open_clip's own ``add_model_config`` silently ignores a file without ``embed_dim``,
``vision_cfg`` and ``text_cfg`` and lets a later file shadow a built-in of the same name;
:func:`register_model_config` validates first and refuses such surprises.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import open_clip

from activevlm.utils.errors import ConfigError
from activevlm.utils.io import read_json
from activevlm.utils.plugins import load_plugins, plugin_hint

REQUIRED_KEYS = ("embed_dim", "vision_cfg", "text_cfg")
SIZE_FIELDS = ("image_size", "layers", "width", "head_width", "patch_size", "context_length",
               "vocab_size", "heads")
SCHEMA_PREFIXES = ("hf-hub:", "local-dir:")
_DEFAULT_CHECKPOINTS: dict[str, Callable[[], Path]] = {}


def _read_config(path: Path) -> dict:
    if path.suffix != ".json":
        raise ValueError(f"model config must be a .json file (the file stem is the name): {path}")
    if not path.is_file():
        raise FileNotFoundError(f"model config not found: {path}")
    cfg = read_json(path)
    if not isinstance(cfg, dict):
        raise ValueError(f"model config {path} must hold a JSON object")
    missing = [k for k in REQUIRED_KEYS if k not in cfg]
    if missing:
        raise ValueError(
            f"model config {path} lacks required field(s) {missing}; an open_clip config needs "
            f"{list(REQUIRED_KEYS)}"
        )
    _check_types(cfg, path)
    return cfg


def _check_types(cfg: dict, path: Path) -> None:
    """The sizes open_clip reads are whole numbers (``layers``/``image_size`` may be lists
    of them) and the towers are objects; else a ``ConfigError`` naming field and value."""
    def whole(value, lists: bool = False) -> bool:
        if lists and isinstance(value, list):
            return bool(value) and all(whole(v) for v in value)
        return isinstance(value, int) and not isinstance(value, bool) and value > 0

    checks = [("embed_dim", cfg.get("embed_dim"), False)]
    for tower in ("vision_cfg", "text_cfg"):
        sub = cfg.get(tower)
        if not isinstance(sub, dict):
            raise ConfigError(f"model config {path}: field {tower!r} is {sub!r:.60}, expected "
                              "an object")
        checks += [(f"{tower}.{key}", sub[key], key in ("layers", "image_size"))
                   for key in SIZE_FIELDS if key in sub]
    for field, value, lists in checks:
        if not whole(value, lists):
            raise ConfigError(f"model config {path}: field {field!r} is {value!r:.60}, "
                              "expected a whole number > 0")


def register_model_config(path: str | Path) -> str:
    """Make a local open_clip JSON config loadable by name; returns the name (the file stem).

    Registering the same content twice is a no-op; a different config under a name that is
    already known (built-in or registered) raises ``ValueError``.
    """
    path = Path(path)
    cfg = _read_config(path)
    name = path.stem
    existing = open_clip.get_model_config(name)
    if existing is not None:
        if existing == cfg:
            return name
        raise ValueError(
            f"model config name {name!r} (from {path}) is already registered with a different "
            "config; rename the file"
        )
    open_clip.add_model_config(path)
    if open_clip.get_model_config(name) != cfg:  # guard against open_clip changing its rules
        raise RuntimeError(f"open_clip did not register model config {path}")
    return name


def get_model_config(name: str) -> dict:
    """The architecture config for a built-in or registered model name (a copy); an unknown
    name is looked up in the ``activevlm.plugins`` entry points first."""
    cfg = open_clip.get_model_config(name)
    failures = {} if cfg is not None else load_plugins()
    cfg = cfg if cfg is not None else open_clip.get_model_config(name)
    if cfg is None:
        raise ValueError(
            f"unknown model {name!r}: not an open_clip built-in and not registered "
            "(register a local JSON config with register_model_config(path)); "
            f"built-ins include {', '.join(open_clip.list_models()[:8])}, ...."
            f"{plugin_hint(failures)}"
        )
    return cfg


def register_default_checkpoint(name: str, checkpoint: Callable[[], Path]) -> None:
    """Let ``load_vlm(name)`` without ``pretrained`` or ``checkpoint`` load the file that
    ``checkpoint()`` returns (called at load time, so it may check or fetch the file)."""
    known = _DEFAULT_CHECKPOINTS.get(name)
    if known is not None and known is not checkpoint:
        raise ValueError(f"model {name!r} already has a default checkpoint ({known!r})")
    _DEFAULT_CHECKPOINTS[name] = checkpoint


def default_checkpoint(name: str) -> Path | None:
    """The registered default checkpoint of ``name`` (plugins consulted), else None."""
    if name not in _DEFAULT_CHECKPOINTS:
        load_plugins()
    provider = _DEFAULT_CHECKPOINTS.get(name)
    return None if provider is None else provider()


def config_digest(cfg: dict) -> str:
    """A short SHA-256 of a config's canonical JSON, for cache keys."""
    blob = json.dumps(cfg, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def is_schema_name(name: str) -> bool:
    """True for open_clip names that carry their own config (``hf-hub:...``, ``local-dir:...``)."""
    return name.startswith(SCHEMA_PREFIXES)
