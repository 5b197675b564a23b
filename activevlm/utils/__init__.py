"""Helpers every layer may use: input checks (``validation``), declared config constraints
(``constraints``), the early-stopping epoch loop (``training``), plugin loading
(``plugins``), atomic file writes (``io``), tensor conversions (``tensors``), devices and
lazy package exports. Names load on first use."""

from activevlm.utils.lazy import lazy_exports

_EXPORTS = {
    **dict.fromkeys(["Interval", "check_constraints", "config_from_dict", "config_to_dict",
                     "deep_merge"], "constraints"),
    "resolve_device": "device",
    **dict.fromkeys(["atomic_path", "atomic_write_csv", "atomic_write_json",
                     "atomic_write_parquet", "atomic_write_text", "read_json"], "io"),
    "lazy_exports": "lazy",
    **dict.fromkeys(["load_plugins", "plugin_hint"], "plugins"),
    **dict.fromkeys(["row_chunks", "to_numpy", "to_tensor"], "tensors"),
    **dict.fromkeys(["EarlyStopping", "TrainingRun", "train_epochs"], "training"),
    **dict.fromkeys(["check_choice", "check_finite", "check_in_range", "check_indices",
                     "check_labels", "check_nonempty", "check_positive_int",
                     "check_same_length", "check_shape"], "validation"),
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
