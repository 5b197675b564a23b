"""``rehead_pool``: a pool for a model that shares another pool's image encoder.

A locked image tower (LiT) gives every model trained on it the same pre-projection image
activations; only the projections and the text tower differ. Re-embedding the images for
each such model repeats the expensive part, so the new pool reuses the image shards
(hard links, or copies across file systems) and recomputes only what the text tower makes.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from activevlm.pool import layout
from activevlm.pool.embed import _class_text_activations, _model_entry
from activevlm.pool.layout import PoolError
from activevlm.pool.store import Pool, open_pool
from activevlm.utils.io import atomic_path, atomic_write_json

REL_TOL = 1e-4


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def check_shared_encoder(source: Pool, vlm, n: int) -> float:
    """Re-embed ``n`` of ``source``'s images (evenly spaced rows) with ``vlm``; returns the
    largest relative error against the stored activations, raises ``PoolError`` when it is
    above ``REL_TOL`` (the two models do not share the image encoder)."""
    rows = np.unique(np.linspace(0, len(source) - 1, num=min(n, len(source))).astype(int))
    pixels = []
    for path in source.items["path"].iloc[rows]:
        with Image.open(path) as image:
            pixels.append(vlm.preprocess(image.convert("RGB")))
    act, _ = vlm.image_activations(torch.stack(pixels))
    stored = torch.from_numpy(np.asarray(source.image_activations[rows], dtype=np.float32))
    err = ((act - stored).norm(dim=1) / stored.norm(dim=1).clamp_min(1e-12)).max().item()
    if err > REL_TOL:
        raise PoolError(f"{vlm.model_id} does not share the image encoder of the pool "
                        f"{source.path} (model {source.model_id}): re-embedded activations "
                        f"differ by {err:.2e} (relative) on {len(rows)} images")
    return err


def rehead_pool(source: Pool, vlm, out: str | Path, *, check: int = 4,
                progress: bool = False) -> Pool:
    """A complete pool of ``vlm`` in ``out`` whose image activations are ``source``'s.

    ``vlm`` must compute the same pre-projection image activations as ``source``'s model
    (e.g. both put a projection on one locked trunk): ``check`` images are re-embedded to
    verify it. The class prompt activations (``source``'s templates), caption activations (if
    any) and the head are ``vlm``'s. The pool is assembled in ``<out>.partial`` and renamed
    onto ``out``; when ``out`` already holds ``vlm``'s complete pool it is returned.
    """
    out = Path(out)
    if (out / layout.MANIFEST).exists():
        return open_pool(out, model_id=vlm.model_id)
    if out.exists() and any(out.iterdir()):
        raise PoolError(f"{out} is not empty and holds no pool: refusing to write a pool into it")
    if source.image_residuals is not None or vlm.family != "clip":
        raise PoolError(f"rehead_pool: {source.path} or {vlm.model_id} has a SigLIP residual, "
                        "which depends on more than the shared encoder; embed it instead")
    if vlm.head.image_dim != source.head.image_dim:
        raise PoolError(f"rehead_pool: {vlm.model_id} takes {vlm.head.image_dim}-d image "
                        f"activations, the pool {source.path} holds {source.head.image_dim}-d")
    if check > 0:
        check_shared_encoder(source, vlm, check)

    tmp = out.with_name(out.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    (tmp / layout.SHARD_DIR).mkdir(parents=True)
    manifest = dict(source.manifest)
    for name in (layout.PLAN, layout.ITEMS, layout.FAILURES):
        _link_or_copy(source.path / name, tmp / name)
    for shard in manifest["shards"]:
        k = int(shard["index"])
        for kind in ("image_act", "marker"):
            _link_or_copy(layout.shard_file(source.path, kind, k),
                          layout.shard_file(tmp, kind, k))
    if source.caption_activations is not None:
        start = 0
        for shard in manifest["shards"]:
            k, n = int(shard["index"]), int(shard["rows"])
            captions = source.items["caption"].iloc[start:start + n].tolist()
            with atomic_path(layout.shard_file(tmp, "caption_act", k)) as f:
                np.save(f, vlm.text_activations(captions).numpy())
            start += n
    with atomic_path(tmp / layout.TEXT_ACT) as f:
        np.save(f, _class_text_activations(vlm, source.classnames, source.templates, progress))
    vlm.head.save(tmp / layout.HEAD)
    manifest["model"] = _model_entry(vlm)
    manifest["dims"] = {**manifest["dims"], "text_act": vlm.head.text_dim,
                        "embed": vlm.head.embed_dim}
    manifest["image_act_from"] = {"pool": str(source.path), "model_id": source.model_id}
    atomic_write_json(tmp / layout.MANIFEST, manifest)
    if out.exists():
        out.rmdir()
    os.replace(tmp, out)
    return open_pool(out, model_id=vlm.model_id)
