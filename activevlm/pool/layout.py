"""Where things live inside a pool directory, and the manifest's format version.

A pool directory holds::

    manifest.json              model, preprocessing, dims, dtype, counts, templates, status
    plan.parquet               every dataset item, in the order they are embedded
    items.parquet              embedded items only; row i <-> activation row i
    failures.parquet           sample_id, path, error for unreadable inputs
    text_act.npy               [C, d_txt] class prompt-ensemble activations
    head.safetensors/.json     the model's ProjectionHead
    shards/image_act-00000.npy [n_k, d_img] per shard (and residual-, caption_act-)
    shards/shard-00000.json    written last: marks the shard finished (resume skips it)
"""

from __future__ import annotations

from pathlib import Path

from activevlm.utils.errors import ActiveVLMError

FORMAT = "activevlm-pool"
FORMAT_VERSION = 1
DTYPE = "float32"

MANIFEST = "manifest.json"
PLAN = "plan.parquet"
ITEMS = "items.parquet"
FAILURES = "failures.parquet"
TEXT_ACT = "text_act.npy"
HEAD = "head"  # head.safetensors + head.json
SHARD_DIR = "shards"

# Array kinds stored per shard: name in the file -> manifest dims key.
SHARD_ARRAYS = {"image_act": "image_act", "residual": "residual", "caption_act": "text_act"}

ITEM_COLUMNS = ["sample_id", "path", "label", "domain", "split"]
FAILURE_COLUMNS = ["sample_id", "path", "error"]


class PoolError(ActiveVLMError, ValueError):
    """A pool directory that is missing, malformed, or does not match the request."""


def shard_file(root: Path, kind: str, k: int) -> Path:
    """``shards/<kind>-<k>.npy`` for array kinds, ``shards/shard-<k>.json`` for the marker."""
    if kind == "marker":
        return root / SHARD_DIR / f"shard-{k:05d}.json"
    return root / SHARD_DIR / f"{kind}-{k:05d}.npy"
