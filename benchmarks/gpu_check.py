"""Every CUDA path of activevlm in one run: correct against a CPU reference, and how fast.

Checks (each on the chosen device, compared with a CPU result within the stated tolerance):

embed     random-init ViT-B-32 (open_clip config, no weights) at the VLM's precision (fp16
          autocast on CUDA): activations through the head vs open_clip's own fp32
          ``encode_image`` on the CPU (min cosine over images).
kfac      ``BayesVLMPosterior.fit`` (pairs mode, ViT-B-32 head) in float32 vs the same fit on
          the CPU in float64 (relative Frobenius error of the four KFAC factors).
bald/epig joint-draw scoring (``JointDraws.from_posterior`` + ``score_pool``) in float32 vs
          the CPU in float64 (max |difference| in nats).
faiss     ``EmbeddingIndex`` (GPU copy when faiss-gpu sees a GPU) k-NN with an exclusion
          mask vs exact float64 brute force (recall@10 of the ids).
finetune  ``finetune_head`` (3 epochs) vs the same run on the CPU (weight difference relative
          to the size of the update).

Throughputs: ours vs a plain-torch baseline on the same device, and the device's measured
fp32 (and, on CUDA, fp16) matmul floor. Without CUDA the CUDA parts are skipped with a line
saying so and everything runs on the CPU; ``--quick`` shrinks the sizes (the test suite runs
that). Exit status 1 when any check fails.

    python benchmarks/gpu_check.py            # a GPU machine: well under 5 minutes
    python benchmarks/gpu_check.py --quick    # CPU smoke run, ~1 minute on 2 cores
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from activevlm.acquisition import score_pool
from activevlm.bayes.draws import JointDraws
from activevlm.bayes.kfac import estimate_kfac
from activevlm.bayes.posterior import BayesVLMPosterior
from activevlm.data import load_dataset
from activevlm.finetune import FinetuneConfig, finetune_head
from activevlm.index.embedding_index import EmbeddingIndex, gpu_available
from activevlm.models import ProjectionHead, load_vlm, register_model_config
from activevlm.pool import embed_dataset


@dataclass
class Row:
    check: str
    device: str
    error: float | None = None
    tol: float | None = None
    measure: str = ""
    ours: float | None = None
    baseline: float | None = None
    unit: str = ""
    note: str = ""
    seconds: float = 0.0  # wall time of the whole check (shared by rows of one check)

    @property
    def status(self) -> str:
        if self.error is None:
            return "timed"
        return "ok" if self.error <= self.tol else "FAIL"


REPEATS = 3  # timed calls after the warm-up (--quick: one call, no warm-up)
WARMUP = True
CHECKS = ("embed", "kfac", "scores", "faiss", "finetune")


def timed(fn: Callable[[], object], device: torch.device, repeats: int | None = None) -> float:
    """Median seconds of ``fn`` over ``repeats`` calls after a warm-up one (CUDA synchronised)."""
    repeats = REPEATS if repeats is None else min(repeats, REPEATS)
    times = []
    for i in range(0 if WARMUP else 1, repeats + 1):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i:
            times.append(time.perf_counter() - t0)
    return float(np.median(times))


def matmul_floor(device: torch.device, dtype: torch.dtype, n: int) -> float:
    """GFLOP/s of an ``n x n`` square GEMM."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    return 2 * n**3 / timed(lambda: a @ b, device) / 1e9


def check_embed(device: torch.device, n_check: int, n_speed: int, model: str) -> list[Row]:
    ref = load_vlm(model, device="cpu", precision="fp32", seed=0)
    ours = load_vlm(model, device=device, precision="auto", seed=0)
    assert ours.model_id == ref.model_id, "random init must not depend on the device"
    with tempfile.TemporaryDirectory() as tmp:  # the real path: files -> DataLoader -> shards
        rng = np.random.default_rng(0)
        for i in range(n_check):
            folder = Path(tmp, "images", f"class_{i % 2}")
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)).save(
                folder / f"{i}.png")
        dataset = load_dataset(f"folder:{tmp}/images")
        pool = embed_dataset(dataset, ours, Path(tmp, "pool"), batch_size=8, shard_size=8,
                             progress=False)
        emb = pool.image_embeddings()
        pixels = torch.stack([ref.preprocess(dataset.load_image(i)) for i in range(n_check)])
    expected = ref.encode_image(pixels, batch_size=32)
    cos = torch.nn.functional.cosine_similarity(emb.double(), expected.double(), dim=-1)
    row = Row("embed", f"{device.type} {ours.precision}", max(0.0, float(1 - cos.min())), 2e-3,
              "embed_dataset: 1 - min cosine vs CPU fp32 encode_image", unit="images/s")
    batch = torch.randn(n_speed, *pixels.shape[1:], device=device)

    def plain():
        with torch.no_grad(), torch.autocast(device.type, enabled=device.type == "cuda",
                                             dtype=torch.float16):
            ours.model.encode_image(batch)

    row.ours = n_speed / timed(lambda: ours.image_activations(batch, batch_size=n_speed), device)
    row.baseline = n_speed / timed(plain, device)
    return [row]


def vit_b32_head(seed: int = 0) -> ProjectionHead:
    g = torch.Generator().manual_seed(seed)
    return ProjectionHead(torch.randn(512, 768, generator=g) / 768**0.5,
                          torch.randn(512, 512, generator=g) / 512**0.5, logit_scale=100.0)


def check_kfac(device: torch.device, n: int, out: list[BayesVLMPosterior]) -> list[Row]:
    """Also appends the CPU float64 posterior to ``out`` (the scoring checks draw from it)."""
    g = torch.Generator().manual_seed(1)
    head = vit_b32_head()
    img, txt = torch.randn(n, 768, generator=g), torch.randn(n, 512, generator=g)

    def fit(dev, dtype):
        return estimate_kfac(head, img, txt, mode="pairs", batch_size=1024, device=dev,
                             dtype=dtype, progress=False)

    ours = fit(device, torch.float32)
    ref = fit("cpu", torch.float64)
    err = max(float((a.A - b.A).norm() / b.A.norm()) for a, b in zip(ours, ref, strict=True))
    err = max(err, *(float((a.B - b.B).norm() / b.B.norm())
                     for a, b in zip(ours, ref, strict=True)))
    row = Row("kfac", f"{device.type} fp32", err, 1e-4,
              "max rel. Frobenius error of A, B vs CPU float64", unit="pairs/s")
    row.ours = n / timed(lambda: fit(device, torch.float32), device, repeats=1)
    x = img.to(device)
    row.baseline = n / timed(lambda: x.T @ x, device)  # the A factor alone: one GEMM
    row.note = "baseline = A-factor GEMM only (a lower bound on KFAC's work)"
    out.append(BayesVLMPosterior.from_head(head, *ref, prior_precision=1.0))
    return [row]


def check_scores(device: torch.device, posterior: BayesVLMPosterior, n: int, m: int,
                 k: int, n_ref: int) -> list[Row]:
    """Scores of the first ``n_ref`` pool items are compared; all ``n`` are timed."""
    g = torch.Generator().manual_seed(2)
    text_act = torch.randn(65, 512, generator=g)
    pool = torch.randn(n, 768, generator=g)
    target = torch.randn(m, 768, generator=g)

    weights = posterior.sample(k, torch.Generator().manual_seed(3))  # one set of joint draws

    def run(dev, dtype, heuristic, rows=n):
        draws = JointDraws.from_weights(weights.image, weights.text, text_act, posterior.head,
                                        device=dev, dtype=dtype)
        tp = draws.probs_chunked(target) if heuristic == "epig" else None
        return score_pool(draws, pool[:rows], heuristic, target_probs=tp, chunk_size=256,
                          progress=False), draws, tp

    rows = []
    for name in ("bald", "epig"):
        ours, draws, tp = run(device, torch.float32, name, n_ref)
        ref, _, _ = run("cpu", torch.float64, name, n_ref)
        row = Row(name, f"{device.type} fp32", float(np.abs(ours - ref).max()), 1e-4,
                  "max |score - CPU float64| (nats)", unit="pool items/s")
        row.ours = n / timed(lambda h=name: run(device, torch.float32, h), device, 1)
        img_w = weights.image.to(device)
        txt_emb = draws.text_embeddings
        sub = pool[: min(n, 256 if name == "bald" else 16)].to(device)

        def plain(h=name, a=sub, w=img_w, txt=txt_emb, s=draws.logit_scale, t=tp):
            """Every draw's embeddings materialised, then the formula per item."""
            emb = torch.nn.functional.normalize(torch.einsum("kdi,ni->knd", w, a), dim=-1)
            p = torch.softmax(s * torch.einsum("knd,kcd->knc", emb, txt), -1)
            if h == "bald":
                p_bar = p.mean(0)
                return (-(p_bar * p_bar.clamp_min(1e-30).log()).sum(-1)
                        + (p * p.clamp_min(1e-30).log()).sum(-1).mean(0))
            for i in range(p.shape[1]):  # per item: [M, C, C] joints, KL to the marginals
                joint = torch.einsum("kc,kmd->mcd", p[:, i], t) / p.shape[0]
                indep = p[:, i].mean(0)[None, :, None] * t.mean(0)[:, None, :]
                (joint * (joint.clamp_min(1e-30) / indep.clamp_min(1e-30)).log()).sum()

        row.baseline = len(sub) / timed(plain, device, 1)
        row.note = "baseline: per-draw embeddings materialised, einsum, formula per item"
        if name == "epig":
            flops = 2 * n * m * 65 * 65 * k
            row.note += (f"; EPIG GEMM work {flops / 1e9:.1f} GFLOP, "
                         f"{flops / 1e9 * row.ours / n:.1f} GFLOP/s end to end")
        rows.append(row)
    return rows


def check_faiss(device: torch.device, n: int, q: int, q_ref: int) -> list[Row]:
    """An exact (flat) index; the first ``q_ref`` queries are checked by brute force."""
    g = np.random.default_rng(4)
    emb = g.standard_normal((n, 512)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    queries = g.standard_normal((q, 512)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    exclude = g.random(n) < 0.1
    on_gpu = device.type == "cuda" and gpu_available()
    index = EmbeddingIndex.build(emb, use_gpu=on_gpu, ivf_threshold=n + 1, progress=False)
    _, ids = index.search(queries[:q_ref], 10, exclude=exclude)
    sims = np.concatenate([queries[:q_ref].astype(np.float64) @ emb[i:i + 65536].T
                           for i in range(0, n, 65536)], axis=1)
    sims[:, exclude] = -np.inf
    truth = np.argpartition(-sims, 10, axis=1)[:, :10]
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, truth, strict=True)])
    label = "gpu" if on_gpu else "cpu"
    row = Row("faiss", f"{label} flat", float(1 - recall), 1e-3,
              "1 - recall@10 vs float64 brute force (10% excluded)", unit="queries/s")
    row.ours = q / timed(lambda: index.search(queries, 10, exclude=exclude), device)
    et, qt = torch.from_numpy(emb).to(device), torch.from_numpy(queries).to(device)
    mask = torch.from_numpy(exclude).to(device)
    row.baseline = q / timed(lambda: (qt @ et.T).masked_fill(mask, -torch.inf).topk(10),
                             device)
    if device.type == "cuda" and not on_gpu:
        row.note = "faiss has no GPU support here (install the gpu extra): CPU index"
    return [row]


def check_finetune(device: torch.device, n: int) -> list[Row]:
    g = torch.Generator().manual_seed(5)
    head = vit_b32_head()
    act = torch.randn(n, 768, generator=g)
    labels = torch.randint(0, 65, (n,), generator=g)
    text_act = torch.randn(65, 512, generator=g)

    def run(dev):
        cfg = FinetuneConfig(max_epochs=3, val_fraction=0.0, seed=0, device=str(dev))
        return finetune_head(head, act, labels, text_act, config=cfg, progress=False)

    ours, ref = run(device), run("cpu")
    change = (ref.head.image_weight - head.image_weight).norm()
    err = float((ours.head.image_weight - ref.head.image_weight).norm() / change)
    row = Row("finetune", device.type, err, 1e-2,
              "|W - W_cpu| / |W_cpu - W_0| after 3 epochs", unit="samples·epochs/s")
    row.ours = 3 * len(ours.train_indices) / timed(lambda: run(device), device, repeats=1)
    w0 = head.image_weight.to(device)
    txt = torch.nn.functional.normalize(head.text_embeddings(text_act), dim=-1).to(device)
    x, y = act.to(device), labels.to(device)

    def plain():  # the same optimisation as a bare torch loop (AdamW, batches of 256)
        w = w0.clone().requires_grad_(True)
        opt = torch.optim.AdamW([w], lr=1e-3, weight_decay=0.0)
        for _ in range(3):
            for i in range(0, len(x), 256):
                emb = torch.nn.functional.normalize(x[i:i + 256] @ w.T, dim=-1)
                loss = torch.nn.functional.cross_entropy(100.0 * emb @ txt.T, y[i:i + 256])
                opt.zero_grad()
                loss.backward()
                opt.step()

    row.baseline = 3 * n / timed(plain, device, repeats=1)
    row.note = "baseline = bare AdamW loop, no validation or early stopping"
    return [row]


def _num(x: float | None) -> str:
    return "—" if x is None else f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def print_table(rows: list[Row], floors: dict[str, float], header: str) -> None:
    print(f"\n{header}")
    print("| check | device | status | error (tol) | what is compared | ours | plain torch | "
          "ours/plain | unit | check s | note |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        err = "—" if r.error is None else f"{r.error:.1e} ({r.tol:.0e})"
        ratio = f"{r.ours / r.baseline:.2f}" if r.ours and r.baseline else "—"
        print(f"| {r.check} | {r.device} | {r.status} | {err} | {r.measure} | "
              f"{_num(r.ours)} | {_num(r.baseline)} | {ratio} | {r.unit} | {r.seconds:.0f} | "
              f"{r.note} |")
    for name, gflops in floors.items():
        print(f"| matmul floor | {name} | — | — | square GEMM | {_num(gflops)} | — | — | "
              "GFLOP/s | | |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (CPU smoke run)")
    ap.add_argument("--cpu", action="store_true", help="ignore CUDA even when present")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    ap.add_argument("--model-config", type=Path, default=None, help="an open_clip JSON config "
                    "to embed with instead of ViT-B-32 (random init either way)")
    ap.add_argument("--only", default=",".join(CHECKS),
                    help=f"comma-separated subset of {','.join(CHECKS)}")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = torch.cuda.is_available() and not args.cpu
    device = torch.device("cuda" if cuda else "cpu")
    if not cuda:
        why = "--cpu given" if args.cpu else "torch.cuda.is_available() is False"
        print(f"SKIPPED: CUDA paths ({why}); every check runs on the CPU against its CPU "
              "reference, and faiss-gpu is not exercised")
    elif not gpu_available():
        print("SKIPPED: faiss GPU index (faiss has no GPU support or sees no GPU); the other "
              "CUDA paths run")
    global REPEATS, WARMUP
    REPEATS, WARMUP = (1, False) if args.quick else (3, True)
    full = dict(n_check=16, n_speed=256, kfac=65536, pool=65536, target=256, k=100,
                score_ref=1024, index=500_000, queries=1024, index_ref=64, finetune=65536)
    cpu = dict(n_check=8, n_speed=16, kfac=8192, pool=8192, target=256, k=32, score_ref=1024,
               index=100_000, queries=256, index_ref=64, finetune=8192)
    quick = dict(n_check=2, n_speed=2, kfac=512, pool=256, target=16, k=8, score_ref=256,
                 index=5000, queries=32, index_ref=32, finetune=256)
    sizes = quick if args.quick else full if cuda else cpu
    started = time.perf_counter()
    torch.manual_seed(0)
    rows: list[Row] = []

    def run(check: Callable[..., list[Row]], *args) -> None:
        t0 = time.perf_counter()
        new = check(*args)
        for row in new:
            row.seconds = time.perf_counter() - t0
        rows.extend(new)

    only = set(args.only.split(","))
    if only - set(CHECKS):
        ap.error(f"--only: unknown checks {sorted(only - set(CHECKS))}; known: {CHECKS}")
    model = register_model_config(args.model_config) if args.model_config else "ViT-B-32"
    if "embed" in only:
        run(check_embed, device, sizes["n_check"], sizes["n_speed"], model)
    posterior: list[BayesVLMPosterior] = []
    if "kfac" in only or "scores" in only:
        run(lambda: check_kfac(device, sizes["kfac"], posterior))
    if "scores" in only:
        run(check_scores, device, posterior[0], sizes["pool"], sizes["target"], sizes["k"],
            sizes["score_ref"])
    if "faiss" in only:
        run(check_faiss, device, sizes["index"], sizes["queries"], sizes["index_ref"])
    if "finetune" in only:
        run(check_finetune, device, sizes["finetune"])
    floors = {f"{device.type} fp32": matmul_floor(device, torch.float32, 4096 if cuda else 1024)}
    if cuda:
        floors["cuda fp16"] = matmul_floor(device, torch.float16, 8192)
        name = torch.cuda.get_device_name()
    else:
        name = f"CPU, {torch.get_num_threads()} threads"
    print_table(rows, floors, f"{name}; torch {torch.__version__}; sizes {sizes}; "
                f"{time.perf_counter() - started:.0f} s")
    failed = [r.check for r in rows if r.status == "FAIL"]
    if failed:
        print(f"FAILED: {', '.join(failed)} differ from the CPU reference beyond tolerance")
        return 1
    print("all checks within tolerance")
    return 0


if __name__ == "__main__":
    sys.exit(main())
