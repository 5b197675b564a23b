"""Images/s of ``activevlm.pool.embed_dataset`` vs a plain open_clip loop, same images and model.

Both sides do the whole job from files on disk: open each image, preprocess, encode in
batches. The baseline is the loop a user would write by hand (PIL + open_clip's transform +
``model.encode_image`` under ``no_grad``, CUDA autocast when on GPU); ``embed_dataset`` adds
the DataLoader, failure handling, activation/residual split and atomic shard writes. The
two run alternately ``--repeats`` times after a warm-up pass; the table shows the medians.

    python benchmarks/embed_throughput.py --model-config tests/fixtures/model_configs/tiny-clip.json
    python benchmarks/embed_throughput.py --model ViT-B-32 --num-images 200
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import open_clip
import torch
from PIL import Image
from rich.console import Console
from rich.table import Table

from activevlm.data import load_dataset
from activevlm.models import load_vlm, register_model_config
from activevlm.pool import embed_dataset
from activevlm.utils.device import resolve_device


def generate_images(root: Path, n: int, size: int, seed: int) -> Path:
    """``n`` random JPEGs of about ``size`` px in 4 class folders (smooth noise, so they
    compress and decode like photos rather than like white noise)."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        folder = root / f"class_{i % 4}"
        folder.mkdir(parents=True, exist_ok=True)
        h, w = (int(size * f) for f in rng.uniform(0.75, 1.25, size=2))
        coarse = rng.integers(0, 256, (h // 16 + 1, w // 16 + 1, 3), dtype=np.uint8)
        img = Image.fromarray(coarse).resize((w, h), Image.BILINEAR)
        img.save(folder / f"{i:06d}.jpg", quality=90)
    return root


def plain_open_clip(model, preprocess, paths: list[str], batch_size: int,
                    device: torch.device) -> int:
    """The hand-written baseline; returns the number of images encoded."""
    autocast = (torch.autocast("cuda", dtype=torch.float16) if device.type == "cuda"
                else contextlib.nullcontext())
    done = 0
    with torch.no_grad(), autocast:
        for start in range(0, len(paths), batch_size):
            batch = []
            for p in paths[start:start + batch_size]:
                with Image.open(p) as im:
                    batch.append(preprocess(im.convert("RGB")))
            emb = model.encode_image(torch.stack(batch).to(device))
            done += emb.float().cpu().shape[0]
    return done


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="open_clip model name (default: stem of --model-config)")
    ap.add_argument("--model-config", type=Path, help="local open_clip JSON config to register")
    ap.add_argument("--images", type=Path, help="folder of images (folder: layout); "
                    "default: generate --num-images")
    ap.add_argument("--num-images", type=int, default=200)
    ap.add_argument("--image-size", type=int, default=256, help="side of generated images")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--num-workers", type=int, default=0, help="embed_dataset loader workers")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    name = args.model
    if args.model_config is not None:
        name = name or register_model_config(args.model_config)
    if name is None:
        ap.error("pass --model or --model-config")
    device = resolve_device(args.device)
    console = Console()

    with tempfile.TemporaryDirectory(prefix="embed-bench-") as tmp:
        tmp = Path(tmp)
        root = args.images or generate_images(tmp / "images", args.num_images,
                                              args.image_size, args.seed)
        dataset = load_dataset(f"folder:{root}")
        paths = dataset.items["path"].tolist()
        vlm = load_vlm(name, device=device, seed=args.seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(args.seed)
            model, _, preprocess = open_clip.create_model_and_transforms(name)
        model = model.to(device).eval()

        def run_ours(i: int) -> int:
            pool = embed_dataset(dataset, vlm, tmp / f"pool-{i}", batch_size=args.batch_size,
                                 num_workers=args.num_workers, progress=False)
            return len(pool)

        def run_baseline(i: int) -> int:
            return plain_open_clip(model, preprocess, paths, args.batch_size, device)

        run_baseline(-1)  # warm-up: page cache, allocator, kernels
        run_ours(-1)
        times: dict[str, list[float]] = {"open_clip loop": [], "activevlm embed_dataset": []}
        counts: dict[str, int] = {}
        for i in range(args.repeats):
            for label, fn in (("open_clip loop", run_baseline),
                              ("activevlm embed_dataset", run_ours)):
                if device.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                counts[label] = fn(i)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                times[label].append(time.perf_counter() - t0)

    base = statistics.median(times["open_clip loop"])
    table = Table(title=f"embed throughput: {vlm.model_id} on {device} ({vlm.precision}), "
                  f"{len(paths)} images, batch {args.batch_size}, "
                  f"{args.num_workers} workers, {args.threads} threads, median of "
                  f"{args.repeats}")
    for col in ("method", "images", "seconds", "images/s", "ratio vs open_clip"):
        table.add_column(col, justify="left" if col == "method" else "right")
    for label, ts in times.items():
        t = statistics.median(ts)
        table.add_row(label, str(counts[label]), f"{t:.2f}", f"{counts[label] / t:.1f}",
                      f"{base / t:.2f}x")
    console.print(table)


if __name__ == "__main__":
    main()
