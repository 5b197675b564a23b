"""Items/s of the Ray pipelines vs the single-process paths, same inputs, same run.

- **score**: ``score_pool_ray`` vs ``score_pool`` on a synthetic pool in the real format
  (memory-mapped ``.npy`` shards of ViT-B-32 activations: d_img 768, D 512, C 65) under K
  joint draws, for BALD and entropy (EPIG: ``--heuristics epig``, slow on a CPU).
- **index**: ``EmbeddingIndex.build(on_disk=..., fill=ray_filler())`` vs the single-process
  on-disk IVF build over ``[N, 512]`` memory-mapped embeddings, one block per 8,192-row shard
  (training, merge and nprobe calibration run in the driver on both sides: the whole build).
- **embed**: ``embed_dataset_ray`` vs ``embed_dataset`` on generated JPEGs with a model
  config (default: the tests' tiny CLIP), shards of ``--shard-size``.

The Ray side starts a local Ray with ``--cpus`` CPUs once (its start-up is reported on its own
line, not counted); each Ray pipeline's time includes starting its actors, which is the
fixed overhead a pipeline pays. Every Ray result is checked equal to the single-process one
(scores bitwise, index lists and metadata bytewise, pool files bytewise except the
manifest's creation time).

    python benchmarks/ray_pipelines.py                      # 2 CPUs, N = 20000, K = 100
    python benchmarks/ray_pipelines.py --stages index --n 200000
    python benchmarks/ray_pipelines.py --n 100000 --cpus 16 --num-images 2048
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np
import torch
from embed_throughput import generate_images  # this folder (the script's path)
from rich.console import Console
from rich.table import Table

from activevlm.acquisition import score_pool, score_pool_ray
from activevlm.bayes.draws import JointDraws
from activevlm.data import load_dataset
from activevlm.index import EmbeddingIndex, default_nlist, ray_filler
from activevlm.models import load_vlm, register_model_config
from activevlm.models.head import ProjectionHead
from activevlm.pool import ShardedArray, embed_dataset, embed_dataset_ray

TINY_CLIP = Path(__file__).resolve().parents[1] / "tests/fixtures/model_configs/tiny-clip.json"


def synthetic_pool(folder: Path, n: int, shard: int, d_img: int, seed: int) -> ShardedArray:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for k, start in enumerate(range(0, n, shard)):
        files.append(folder / f"image_act-{k:05d}.npy")
        np.save(files[-1], rng.normal(size=(min(shard, n - start), d_img)).astype(np.float32))
    return ShardedArray(files, d_img)


def synthetic_draws(k: int, d_img: int, d_txt: int, dim: int, classes: int,
                    seed: int) -> JointDraws:
    g = torch.Generator().manual_seed(seed)
    head = ProjectionHead(torch.randn(dim, d_img, generator=g) / d_img ** 0.5,
                          torch.randn(dim, d_txt, generator=g) / d_txt ** 0.5, 50.0)
    img = head.image_weight + 0.05 * torch.randn(k, dim, d_img, generator=g) / d_img ** 0.5
    txt = head.text_weight + 0.05 * torch.randn(k, dim, d_txt, generator=g) / d_txt ** 0.5
    return JointDraws.from_weights(img, txt, torch.randn(classes, d_txt, generator=g), head,
                                   device="cpu")


def pool_files(path: Path) -> dict[str, bytes]:
    files = {str(f.relative_to(path)): f.read_bytes() for f in path.rglob("*") if f.is_file()}
    manifest = json.loads(files.pop("manifest.json"))
    del manifest["created"]
    return files | {"manifest.json": json.dumps(manifest, sort_keys=True).encode()}


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray")
    ap.add_argument("--threads", type=int, default=2,
                    help="torch and faiss threads, single process")
    ap.add_argument("--n", type=int, default=20000, help="pool rows to score")
    ap.add_argument("--draws", type=int, default=100)
    ap.add_argument("--chunk-size", type=int, default=2048)
    ap.add_argument("--heuristics", default="bald,entropy")
    ap.add_argument("--num-images", type=int, default=256)
    ap.add_argument("--shard-size", type=int, default=64)
    ap.add_argument("--model-config", type=Path, default=TINY_CLIP)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--stages", default="score,index,embed")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    import ray

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        start = time.perf_counter()
        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False,
                 logging_level=logging.WARNING,
                 runtime_env={"env_vars": {"PYTHONPATH": str(Path(__file__).parents[1])}})
        ray.data.DataContext.get_current().enable_progress_bars = False
        ray_start = time.perf_counter() - start

        stages = args.stages.split(",")
        if "score" in stages:
            act = synthetic_pool(tmp, args.n, 8192, 768, args.seed)
            draws = synthetic_draws(args.draws, 768, 512, 512, 65, args.seed)
            for h in args.heuristics.split(","):
                target = None
                if h == "epig":
                    target = draws.probs(np.random.default_rng(1).normal(size=(64, 768))
                                         .astype(np.float32))
                kw = dict(target_probs=target, chunk_size=args.chunk_size, progress=False)
                ref, t_one = timed(lambda h=h, kw=kw: score_pool(draws, act, h, **kw))
                ours, t_ray = timed(lambda h=h, kw=kw: score_pool_ray(draws, act, h, **kw))
                rows.append((f"score {h} (K={args.draws})", args.n, t_one, t_ray,
                             bool(np.array_equal(ref, ours))))

        if "index" in stages:
            emb = synthetic_pool(tmp / "emb", args.n, 8192, 512, args.seed + 1)
            kw = dict(ivf_threshold=1, chunk_size=8192, progress=False)
            ref, t_one = timed(lambda: EmbeddingIndex.build(emb, on_disk=tmp / "i1", **kw))
            ours, t_ray = timed(lambda: EmbeddingIndex.build(emb, on_disk=tmp / "i2",
                                                             fill=ray_filler(), **kw))
            same = ref.metadata() == ours.metadata() and \
                (tmp / "i1/index.ivfdata").read_bytes() == (tmp / "i2/index.ivfdata").read_bytes()
            rows.append((f"on-disk IVF build (nlist {default_nlist(args.n)}, nprobe {ref.nprobe})",
                         args.n, t_one, t_ray, same))

        if "embed" in stages:
            ds = load_dataset(f"folder:{generate_images(tmp / 'images', args.num_images, 96, 0)}")
            vlm = load_vlm(register_model_config(args.model_config), device="cpu")
            options = dict(batch_size=32, shard_size=args.shard_size, progress=False)
            ref, t_one = timed(lambda: embed_dataset(ds, vlm, tmp / "single", **options))
            ours, t_ray = timed(lambda: embed_dataset_ray(ds, vlm, tmp / "ray", **options))
            rows.append((f"embed {vlm.name} (shards of {args.shard_size})", args.num_images,
                         t_one, t_ray, pool_files(ref.path) == pool_files(ours.path)))
        ray.shutdown()
    print_table(args, ray_start, rows)


def print_table(args, ray_start: float, rows: list[tuple]) -> None:
    table = Table(title=f"Ray ({args.cpus} CPUs, local) vs one process ({args.threads} torch/faiss "
                        f"threads); Ray start-up {ray_start:.1f} s, not counted")
    for col in ("stage", "items", "single s", "Ray s", "single items/s", "Ray items/s",
                "ratio Ray/single", "same result"):
        table.add_column(col)
    for name, n, one, on_ray, same in rows:
        table.add_row(name, f"{n:,}", f"{one:.1f}", f"{on_ray:.1f}", f"{n / one:,.0f}",
                      f"{n / on_ray:,.0f}", f"{one / on_ray:.2f}", "yes" if same else "NO")
    Console(width=150).print(table)


if __name__ == "__main__":
    main()
