"""``embed_dataset``: run the encoders once over a dataset and write a resumable pool.

Shard ``k`` covers plan rows ``[k * shard_size, (k + 1) * shard_size)``. Its arrays are
written atomically, then its marker ``shards/shard-<k>.json``; a re-run skips every shard
whose marker exists, so an interrupted run resumes where it stopped. Batches never cross a
shard boundary, so a resumed shard sees exactly the batches an uninterrupted run would.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

import activevlm
from activevlm.data.prompts import resolve_templates
from activevlm.pool import layout
from activevlm.pool.layout import PoolError
from activevlm.pool.reader import Batch, ImageReader, collate
from activevlm.pool.store import Pool, open_pool, read_manifest
from activevlm.utils.io import (
    atomic_path,
    atomic_write_json,
    atomic_write_parquet,
    remove_temp_files,
)

DEFAULT_SHARD_SIZE = 8192
PLAN_COMPARE = ["sample_id", "label", "domain", "split", "caption"]

ShardEmbedder = Callable[..., None]
"""``embed(dataset, vlm, out, plan, pending, shard_size, batch_size, num_workers, progress)``:
writes the activation shards and markers of the shard indices ``pending``
(:func:`embed_shards`)."""


def embed_dataset(
    dataset,
    vlm,
    out: str | Path,
    *,
    batch_size: int = 64,
    num_workers: int = 0,
    shard_size: int = DEFAULT_SHARD_SIZE,
    templates: str | Sequence[str] = "simple",
    progress: bool = True,
    embed_pending: ShardEmbedder | None = None,
) -> Pool:
    """Embed every image of ``dataset`` with ``vlm`` into the pool directory ``out``.

    Stores pre-projection image activations ``[N, d_img]`` (plus SigLIP residuals ``[N, D]``
    and caption activations ``[N, d_txt]`` when the dataset has captions), class
    prompt-ensemble text activations ``[C, d_txt]`` and the projection head. The encoders run
    on ``vlm.device`` at ``vlm.precision`` (``load_vlm(device="auto")``: CUDA with fp16
    autocast when present, else CPU fp32); results are stored as float32. Images are read by
    a DataLoader with ``num_workers`` processes, ``batch_size`` at a time, and ``shard_size``
    rows are held in memory before a shard is written. Unreadable images are recorded in
    ``failures.parquet`` and skipped.

    Re-running after an interruption resumes (finished shards are kept); re-running on a
    complete pool returns it. Raises ``PoolError`` when ``out`` holds a pool of another
    model, another dataset plan, other templates or another shard size.

    ``embed_pending`` embeds the pending shards (default :func:`embed_shards` in this
    process; :func:`activevlm.pool.ray_embed.embed_dataset_ray` passes its Ray pipeline).
    """
    job = prepare_job(dataset, vlm, out, batch_size=batch_size, shard_size=shard_size,
                      templates=templates, progress=progress)
    if job.complete:
        return open_pool(job.out, model_id=vlm.model_id)
    if job.pending:
        (embed_pending or embed_shards)(dataset, vlm, job.out, job.plan, job.pending,
                                        shard_size, batch_size, num_workers, progress)
    return finalise_pool(job.out, job.manifest, job.plan, job.n_shards)


@dataclass
class EmbedJob:
    """What is left to embed into ``out``: the ``plan`` table (one row per dataset item),
    its ``manifest``, and the ``pending`` shard indices (those without a marker)."""

    out: Path
    plan: pd.DataFrame
    manifest: dict
    n_shards: int
    pending: list[int]

    @property
    def complete(self) -> bool:
        return self.manifest["status"] == "complete"


def prepare_job(dataset, vlm, out: str | Path, *, batch_size: int, shard_size: int,
                templates: str | Sequence[str], progress: bool) -> EmbedJob:
    """Check the request against ``out``, write or check its manifest and plan, clear
    partial writes of a killed run and write the class text activations: everything
    ``embed_dataset`` (and its Ray form) does before the image shards."""
    if batch_size < 1 or shard_size < 1:
        raise ValueError(f"batch_size and shard_size must be >= 1, got {batch_size}, "
                         f"{shard_size}")
    out = Path(out)
    template_name = templates if isinstance(templates, str) else None
    prompts = resolve_templates(templates)
    plan = _plan_table(dataset.items)
    if len(plan) == 0:
        raise PoolError(f"dataset {dataset.name!r} ({dataset.root}) has no images: nothing to "
                        f"embed into {out}")
    n_shards = math.ceil(len(plan) / shard_size)

    manifest = _start_or_resume(out, dataset, vlm, plan, template_name, prompts, shard_size,
                                n_shards)
    if manifest["status"] == "complete":
        return EmbedJob(out, plan, manifest, n_shards, [])
    for folder in (out, out / layout.SHARD_DIR):  # partial writes of a killed run
        remove_temp_files(folder)

    text_file = out / layout.TEXT_ACT
    if not text_file.exists():
        with atomic_path(text_file) as tmp:
            np.save(tmp, _class_text_activations(vlm, list(dataset.classnames), prompts, progress))

    pending = [k for k in range(n_shards) if not layout.shard_file(out, "marker", k).exists()]
    return EmbedJob(out, plan, manifest, n_shards, pending)


def _plan_table(items: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in layout.ITEM_COLUMNS if c not in items.columns]
    if missing:
        raise ValueError(f"dataset items lack column(s) {missing}")
    cols = layout.ITEM_COLUMNS + (["caption"] if "caption" in items.columns else [])
    plan = items[cols].reset_index(drop=True).copy()
    plan["label"] = plan["label"].astype("int64")
    if plan["sample_id"].duplicated().any():
        dup = plan.loc[plan["sample_id"].duplicated(), "sample_id"].iloc[0]
        raise ValueError(f"dataset sample_id values must be unique; {dup!r} repeats")
    return plan


def _model_entry(vlm) -> dict:
    return {
        "model_id": vlm.model_id,
        "name": vlm.name,
        "pretrained": vlm.pretrained,
        "checkpoint": None if vlm.checkpoint is None else str(vlm.checkpoint),
        "family": vlm.family,
        "precision": vlm.precision,
        "preprocess": vlm.preprocess_description,
    }


def _start_or_resume(out: Path, dataset, vlm, plan: pd.DataFrame, template_name: str | None,
                     prompts: list[str], shard_size: int, n_shards: int) -> dict:
    """Write the initial manifest and plan, or check an existing pool matches this request."""
    mfile = out / layout.MANIFEST
    if mfile.exists():
        manifest = read_manifest(out)
        stored = manifest["model"]["model_id"]
        if stored != vlm.model_id:
            raise PoolError(f"{mfile} belongs to model_id {stored!r}, not {vlm.model_id!r}; "
                            "use another --out directory for a different model")
        _check_plan(out, plan)
        if manifest["templates"]["prompts"] != prompts:
            raise PoolError(f"{mfile}: field 'templates' holds {manifest['templates']['prompts']}"
                            f", this run asks for {prompts}; use another output directory")
        if manifest["shard_size"] != shard_size:
            raise PoolError(f"{mfile}: field 'shard_size' is {manifest['shard_size']}, this run "
                            f"asks for {shard_size}; re-run with --shard-size "
                            f"{manifest['shard_size']}")
        return manifest
    # A crash before the manifest was written leaves only these files (or temporaries).
    leftovers = {layout.PLAN, f"{layout.HEAD}.safetensors", f"{layout.HEAD}.json"}
    foreign = [e.name for e in out.iterdir()
               if e.name not in leftovers and not e.name.startswith(".")] if out.exists() else []
    if foreign:
        raise PoolError(f"{out} is not empty ({', '.join(sorted(foreign)[:5])}) and has no "
                        f"{layout.MANIFEST}: refusing to write a pool into it")
    head = vlm.head
    manifest = {
        "format": layout.FORMAT,
        "format_version": layout.FORMAT_VERSION,
        "status": "incomplete",
        "activevlm_version": activevlm.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "model": _model_entry(vlm),
        "dims": {
            "image_act": head.image_dim,
            "text_act": head.text_dim,
            "embed": head.embed_dim,
            "residual": head.embed_dim if vlm.family == "siglip" else None,
        },
        "dtype": layout.DTYPE,
        "shard_size": shard_size,
        "counts": {"planned": len(plan), "items": None, "failures": None, "shards": n_shards},
        "templates": {"name": template_name, "prompts": prompts},
        "classnames": list(dataset.classnames),
        "dataset": {"name": dataset.name, "description": dataset.description},
        "arrays": None,
        "shards": None,
    }
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_parquet(out / layout.PLAN, plan)
    head.save(out / layout.HEAD)
    atomic_write_json(mfile, manifest)
    return manifest


def _values(df: pd.DataFrame, col: str) -> list:
    if col not in df.columns:
        return [None] * len(df)
    s = df[col].astype(object)
    return s.where(s.notna(), None).tolist()


def _check_plan(out: Path, plan: pd.DataFrame) -> None:
    file = out / layout.PLAN
    if not file.exists():
        raise PoolError(f"{file} is missing: cannot check the dataset against the pool's plan")
    stored = pd.read_parquet(file)
    if len(stored) != len(plan):
        raise PoolError(f"dataset has {len(plan)} items but the pool in {out} was planned for "
                        f"{len(stored)} ({file}); use another output directory")
    for col in PLAN_COMPARE:
        a, b = _values(stored, col), _values(plan, col)
        if a != b:
            i = next(j for j, (x, y) in enumerate(zip(a, b, strict=True)) if x != y)
            raise PoolError(f"dataset items differ from the pool's plan {file}: row {i} column "
                            f"{col!r} is {b[i]!r} in the dataset, {a[i]!r} in the pool")


def _class_text_activations(vlm, classnames: list[str], prompts: list[str],
                            progress: bool) -> np.ndarray:
    if not classnames:
        return np.zeros((0, vlm.head.text_dim), dtype=np.float32)
    return _numpy(vlm.class_text_activations(classnames, prompts, progress=progress))


class _ShardBuffer:
    """Outputs of one shard's batches until the shard is complete."""

    def __init__(self, k: int, rows: range):
        self.k, self.rows, self.seen = k, rows, 0
        self.ok: list[np.ndarray] = []
        self.arrays: dict[str, list[np.ndarray]] = {}
        self.failed: list[dict] = []

    def add(self, batch: Batch, outputs: dict[str, np.ndarray]) -> None:
        self.seen += len(batch.rows)
        self.ok.append(batch.ok_rows)
        for name, arr in outputs.items():
            self.arrays.setdefault(name, []).append(arr)
        self.failed += [{"row": int(i), "error": e} for i, e in batch.failed]

    @property
    def done(self) -> bool:
        return self.seen == len(self.rows)

    def write(self, out: Path, kinds: list[str], dims: dict[str, int | None]) -> None:
        ok = np.concatenate(self.ok) if self.ok else np.zeros(0, dtype=np.int64)
        for kind in kinds:
            dim = dims[layout.SHARD_ARRAYS[kind]]
            parts = self.arrays.get(kind, [])
            arr = np.concatenate(parts) if parts else np.zeros((0, dim), dtype=np.float32)
            if arr.shape != (ok.size, dim):
                raise RuntimeError(f"shard {self.k}: {kind} has shape {list(arr.shape)}, "
                                   f"expected [{ok.size}, {dim}] (does the model return it?)")
            with atomic_path(layout.shard_file(out, kind, self.k)) as tmp:
                np.save(tmp, arr.astype(np.float32, copy=False))
        marker = {"index": self.k, "plan_rows": [self.rows.start, self.rows.stop],
                  "rows": int(ok.size), "failed": self.failed}
        atomic_write_json(layout.shard_file(out, "marker", self.k), marker)


class _ShardBatches:
    """Batch sampler: consecutive row batches of each pending shard, never crossing shards."""

    def __init__(self, shards: list[range], batch_size: int):
        self.shards, self.batch_size = shards, batch_size

    def __iter__(self) -> Iterator[list[int]]:
        for rows in self.shards:
            for j in range(0, len(rows), self.batch_size):
                yield list(rows[j : j + self.batch_size])

    def __len__(self) -> int:
        return sum(math.ceil(len(r) / self.batch_size) for r in self.shards)


def embed_shards(dataset, vlm, out: Path, plan: pd.DataFrame, pending: list[int],
                 shard_size: int, batch_size: int, num_workers: int, progress: bool) -> None:
    """Embed the ``pending`` shards of ``plan`` in order, writing each shard's arrays and
    then its marker atomically as soon as its last batch is done."""
    dims = read_manifest(out)["dims"]
    has_captions = "caption" in plan.columns
    kinds = _array_kinds(dims, has_captions)
    shard_rows = {k: range(k * shard_size, min((k + 1) * shard_size, len(plan))) for k in pending}
    batches = _ShardBatches(list(shard_rows.values()), batch_size)
    device = torch.device(vlm.device)
    loader = torch.utils.data.DataLoader(
        ImageReader(dataset, vlm.preprocess), batch_sampler=batches, collate_fn=collate,
        num_workers=num_workers, pin_memory=device.type == "cuda",
    )
    captions = plan["caption"].tolist() if has_captions else None
    total = sum(len(r) for r in shard_rows.values())
    columns = [TextColumn("[bold]embedding[/]"), BarColumn(), MofNCompleteColumn(),
               TextColumn("images"), TimeElapsedColumn(), TimeRemainingColumn()]
    buffer: _ShardBuffer | None = None
    with Progress(*columns, disable=not progress) as bar:
        task = bar.add_task("embed", total=total)
        for batch in loader:
            if buffer is None:
                k = int(batch.rows[0]) // shard_size
                buffer = _ShardBuffer(k, shard_rows[k])
            outputs: dict[str, np.ndarray] = {}
            if batch.pixels is not None:
                pixels = batch.pixels.to(device, non_blocking=True)
                act, residual = vlm.image_activations(pixels, batch_size=batch_size)
                if has_captions:
                    texts = [captions[i] for i in batch.ok_rows]
                    outputs["caption_act"] = _numpy(vlm.text_activations(texts, batch_size))
                outputs["image_act"] = _numpy(act)
                if residual is not None:
                    outputs["residual"] = _numpy(residual)
            buffer.add(batch, outputs)
            bar.advance(task, len(batch.rows))
            if buffer.done:
                buffer.write(out, kinds, dims)
                buffer = None


def _array_kinds(dims: dict[str, int | None], has_captions: bool) -> list[str]:
    """Which per-shard arrays a pool holds."""
    return (["image_act"] + (["residual"] if dims["residual"] else [])
            + (["caption_act"] if has_captions else []))


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().float().cpu().numpy()


def finalise_pool(out: Path, manifest: dict, plan: pd.DataFrame, n_shards: int) -> Pool:
    """Gather shard markers into items/failures tables and mark the manifest complete."""
    keep = np.ones(len(plan), dtype=bool)
    failures, shards = [], []
    for k in range(n_shards):
        marker = json.loads(layout.shard_file(out, "marker", k).read_text())
        for f in marker["failed"]:
            i = f["row"]
            keep[i] = False
            failures.append((plan.at[i, "sample_id"], plan.at[i, "path"], f["error"]))
        shards.append({"index": k, "rows": marker["rows"]})
    items = plan[keep].reset_index(drop=True)
    fail_df = pd.DataFrame(failures, columns=layout.FAILURE_COLUMNS).astype(object)
    atomic_write_parquet(out / layout.ITEMS, items)
    atomic_write_parquet(out / layout.FAILURES, fail_df)
    manifest.update(
        status="complete",
        arrays=_array_kinds(manifest["dims"], "caption" in plan.columns),
        shards=shards,
        counts={"planned": len(plan), "items": len(items), "failures": len(fail_df),
                "shards": n_shards},
    )
    atomic_write_json(out / layout.MANIFEST, manifest)
    return open_pool(out, model_id=manifest["model"]["model_id"])
