"""EPIG and BALD throughput: activevlm's joint-draw scorer vs a straightforward implementation.

Setting (defaults): ViT-B-32-sized head (D = 512, d_img = 768, d_txt = 512), C = 65 classes,
K = 100 joint weight draws, N = 10^5 pool items, M = 10^3 targets, random activations.

ours      JointDraws + score_pool: per-draw text embeddings precomputed, one batched matmul
          per pool chunk, EPIG by the entropy rewrite over [n·C, K] @ [K, m·C] blocks.
baseline  materialises every draw's image embeddings for all items ([K, N, D]), then for each
          pool item builds the [M, C, C] joints by einsum and takes the KL to the product of
          marginals (no entropy rewrite, no chunk-level matmul).

The baseline runs on ``--baseline-n`` pool items and its per-item time is extrapolated
linearly to N (its one-off text and target embedding cost is added once); the table says so. Peak
memory is the RSS high-water mark above the level before each phase (sampled every 5 ms).
Both scorers are run on the same items and their scores compared.

Greedy batch rule (``--greedy epig,bald``): a KFAC posterior is fitted (labels mode, λ by the
evidence) on the first 4096 pool rows; K draws score the whole pool once as ``select`` does
(the one-pass score: joint draws for EPIG, per-input draws for BALD), the best
``prefilter x budget`` rows are the candidates, and ``greedy_batch`` picks ``budget`` of them
with label-free conditioning (EPIG against ``--greedy-targets`` of the M targets), then
``pseudo_label_batch`` with each ``--pseudo-samples`` S (labels sampled per pick, S branches)
picks ``budget`` of the same candidates. The table gives the one-pass time, each rule's batch
phase, and their ratio: total = one-pass + batch phase.

EPIG kernel (``--only kernel``): the square fp32 GEMM floor of this machine (2048³, best of 3)
and ``epig_scores`` on ``--kernel-n`` pool items x M targets of real draw probabilities, in
GFLOP/s counting 2·n·C·m·C·K for the joint GEMM and as a fraction of the floor, for ours and
for the kernel before issue 17 (thin [C, K] @ [K, 65000·C/C] blocks, clamp/log/mul/sum passes),
all in the same run; wall and CPU clocks (CPU is robust to other jobs at one thread).

Per-input draws (``--only per-input``): untargeted BALD and posterior entropy of N pool items
on a fitted KFAC posterior (labels mode on the first 4096 rows, λ by the evidence), scored
with ``MarginalDraws`` (what ``select`` uses) vs ``JointDraws`` (weight draws, before), K
draws each; the two are different Monte Carlo draws, so the table gives their rank
correlation and median relative difference instead of a max|diff|, next to the same two
statistics between joint draws of two seeds (the Monte Carlo noise floor at this K).

    python benchmarks/acquisition.py                       # full size (hours on 2 CPU cores)
    python benchmarks/acquisition.py --n 2000 --m 200      # quick
    python benchmarks/acquisition.py --only greedy --greedy epig --n 10000   # greedy rules only
    python benchmarks/acquisition.py --only greedy --greedy bald --pseudo-samples 1,2,4
    python benchmarks/acquisition.py --only kernel --threads 1
    python benchmarks/acquisition.py --only per-input --n 100000
"""

from __future__ import annotations

import argparse
import threading
import time
from contextlib import contextmanager
from functools import partial

import numpy as np
import torch

from activevlm.acquisition import (
    Heuristic,
    epig_scores,
    greedy_batch,
    pseudo_label_batch,
    score_pool,
)
from activevlm.acquisition.plogp import native_plogp
from activevlm.bayes.draws import JointDraws
from activevlm.bayes.marginal_draws import SCORING_CHUNK, MarginalDraws
from activevlm.bayes.posterior import BayesVLMPosterior
from activevlm.models.head import ProjectionHead


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


@contextmanager
def peak_memory(result: dict):
    """Record the peak RSS increase (bytes) while the block runs into ``result["peak"]``."""
    start, peak, done = rss_bytes(), [0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], rss_bytes() - start)
            time.sleep(0.005)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        yield
    finally:
        result["seconds"] = time.perf_counter() - t0
        result["cpu"] = time.process_time() - c0
        done.set()
        t.join()
        result["peak"] = max(peak[0], rss_bytes() - start)


def make_problem(args):
    g = torch.Generator().manual_seed(args.seed)
    d, di, dt = args.embed_dim, args.d_img, args.d_txt
    head = ProjectionHead(torch.randn(d, di, generator=g) / di**0.5,
                          torch.randn(d, dt, generator=g) / dt**0.5, logit_scale=100.0)
    # joint draws around the MAP weights, spread so that the draws disagree on classes
    img_w = head.image_weight + args.spread * torch.randn(args.k, d, di, generator=g) / di**0.5
    txt_w = head.text_weight + args.spread * torch.randn(args.k, d, dt, generator=g) / dt**0.5
    text_act = torch.randn(args.c, dt, generator=g)
    pool = torch.randn(args.n, di, generator=g).numpy()
    target = torch.randn(args.m, di, generator=g).numpy()
    return head, img_w, txt_w, text_act, pool, target


def baseline_text(txt_w, text_act) -> torch.Tensor:
    """Normalised class embeddings under every draw, ``[K, C, D]`` (a one-off cost)."""
    txt = torch.stack([(w @ text_act.T).T for w in txt_w])
    return txt / txt.norm(dim=-1, keepdim=True)


def baseline_probs(img_w, txt, act, scale) -> torch.Tensor:
    """Every draw's embeddings of every item materialised, ``[K, n, D]``, then ``[K, n, C]``."""
    a = torch.from_numpy(act)
    emb = torch.stack([(w @ a.T).T for w in img_w])
    emb = emb / emb.norm(dim=-1, keepdim=True)
    return torch.softmax(scale * torch.einsum("knd,kcd->knc", emb, txt), dim=-1)


def baseline_epig(p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Per pool item: joints ``[M, C, C]`` by einsum, KL to the product of marginals."""
    k = p.shape[0]
    t_bar = t.mean(0)
    out = torch.empty(p.shape[1])
    for i in range(p.shape[1]):
        joint = torch.einsum("kc,kmd->mcd", p[:, i], t) / k
        indep = p[:, i].mean(0)[None, :, None] * t_bar[:, None, :]
        kl = joint * (joint.clamp_min(1e-30).log() - indep.clamp_min(1e-30).log())
        out[i] = kl.sum((1, 2)).mean()
    return out


def baseline_bald(p: torch.Tensor) -> torch.Tensor:
    p_bar = p.mean(0)
    h_bar = -(p_bar * p_bar.clamp_min(1e-30).log()).sum(-1)
    return h_bar - (-(p * p.clamp_min(1e-30).log()).sum(-1)).mean(0)


def previous_epig(p: torch.Tensor, t: torch.Tensor, max_elements: int = 1 << 23) -> torch.Tensor:
    """The EPIG kernel before issue 17 (baseline): targets first into blocks of 2^23 entries
    ([C, K] @ [K, m·C] for M = 1000), then clamp, log, mul and two sums over each block."""
    k, n, c = p.shape
    m = t.shape[1]
    acc = torch.float64
    h_pool = -(p.mean(0).double() * p.mean(0).double().clamp_min(1e-300).log()).sum(-1)
    t_bar = t.mean(0).double()
    h_target = -(t_bar * t_bar.clamp_min(1e-300).log()).sum(-1).mean()
    m_chunk = max(1, min(m, max_elements // (c * c)))
    n_chunk = max(1, min(n, max_elements // (c * c * m_chunk)))
    blocks = [(t[:, m0 : m0 + m_chunk] / k).reshape(k, -1) for m0 in range(0, m, m_chunk)]
    joint_buf, plogp_buf = p.new_empty(n_chunk * m_chunk * c * c), p.new_empty(
        n_chunk * m_chunk * c * c)
    tiny = torch.finfo(p.dtype).tiny
    h_joint = torch.zeros(n, dtype=acc)
    for n0 in range(0, n, n_chunk):
        block = p[:, n0 : n0 + n_chunk]
        nb = block.shape[1]
        left = block.reshape(k, nb * c).T
        for right in blocks:
            mb = right.shape[1] // c
            joint = joint_buf[: nb * c * mb * c].view(nb * c, mb * c)
            torch.matmul(left, right, out=joint)
            plogp = plogp_buf[: joint.numel()].view_as(joint)
            torch.clamp_min(joint, tiny, out=plogp)
            plogp.log_().mul_(joint)
            per_pair = plogp.view(nb * c, mb, c).sum(-1).view(nb, c, mb).sum(1)
            h_joint[n0 : n0 + nb] -= per_pair.sum(1, dtype=acc)
    return (h_pool + h_target - h_joint / m).clamp_min(0.0).to(p.dtype)


def timed(fn, repeats: int = 3) -> tuple[float, float, object]:
    """Best wall and best CPU seconds of ``repeats`` calls (after one warm-up), and a result."""
    out = fn()
    walls, cpus = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return min(walls), min(cpus), out


def bench_kernel(args, img_w, txt_w, text_act, head, pool, target) -> None:
    """EPIG kernel GFLOP/s against the square fp32 GEMM floor, measured in the same run."""
    draws = JointDraws.from_weights(img_w, txt_w, text_act, head, device="cpu")
    p = draws.probs(pool[: args.kernel_n])
    t = draws.probs_chunked(target)
    size = 2048
    a, b = torch.randn(size, size), torch.randn(size, size)
    out = torch.empty(size, size)
    floor_flop = 2 * size**3
    rows = [("square GEMM 2048 (floor)", floor_flop,
             *timed(lambda: torch.matmul(a, b, out=out))[:2], float("nan"))]
    flop = 2 * p.shape[1] * args.c * t.shape[1] * args.c * args.k
    w_prev, c_prev, prev = timed(lambda: previous_epig(p, t))
    w_ours, c_ours, ours = timed(lambda: epig_scores(p, t))
    diff = float((ours.double() - prev.double()).abs().max())
    rows += [("EPIG kernel before issue 17", flop, w_prev, c_prev, 0.0),
             ("EPIG kernel (ours)", flop, w_ours, c_ours, diff)]
    # sharp predictives (p^30, renormalised) as CLIP's logit scale gives: subnormal products
    ps, ts = (torch.softmax(30 * x.clamp_min(1e-30).log(), -1) for x in (p[:, :8], t))
    flop_s = flop * ps.shape[1] // p.shape[1]
    w_sp, c_sp, sprev = timed(lambda: previous_epig(ps, ts), repeats=1)
    w_so, c_so, sours = timed(lambda: epig_scores(ps, ts), repeats=1)
    rows += [("before, sharp (8 inputs)", flop_s, w_sp, c_sp, 0.0),
             ("ours, sharp (8 inputs)", flop_s, w_so, c_so,
              float((sours.double() - sprev.double()).abs().max()))]
    floor_wall, floor_cpu = floor_flop / rows[0][2], floor_flop / rows[0][3]
    print(f"\nEPIG kernel: n={p.shape[1]} pool x M={t.shape[1]} targets, C={args.c}, K={args.k}, "
          f"threads={args.threads}; flop = 2·n·C·M·C·K = {flop / 1e9:.1f} G; best of 3")
    header = (f"{'':<30}{'wall s':>9}{'GFLOP/s':>9}{'/floor':>8}{'cpu s':>9}{'GFLOP/cpu-s':>13}"
              f"{'/floor':>8}{'max|diff|':>11}")
    print(header)
    print("-" * len(header))
    for name, fl, wall, cpu, d in rows:
        print(f"{name:<30}{wall:>9.3f}{fl / wall / 1e9:>9.1f}{fl / wall / floor_wall:>8.2f}"
              f"{cpu:>9.3f}{fl / cpu / 1e9:>13.1f}{fl / cpu / floor_cpu:>8.2f}{d:>11.1e}")
    print(f"ours / before: {w_prev / w_ours:.2f}x wall, {c_prev / c_ours:.2f}x CPU; max|diff| "
          f"is ours against the kernel before (EPIG mean {float(ours.mean()):.2e})")
    fused = "the fused C loop" if native_plogp() else "torch's log, mul and sum (no C kernel)"
    print(f"ours ran its Σ p̂ log p̂ pass with {fused}")


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    rx, ry = np.argsort(np.argsort(x)), np.argsort(np.argsort(y))
    return float(np.corrcoef(rx, ry)[0, 1])


def bench_per_input(args, head, text_act, pool) -> None:
    """Untargeted BALD / posterior entropy: MarginalDraws (ours) vs JointDraws (before)."""
    post = BayesVLMPosterior.fit(head, pool[:4096], text_act, mode="labels", device="cpu",
                                 progress=False)
    print(f"\nPer-input scores: N={args.n} pool, C={args.c}, K={args.k}, D={args.embed_dim}, "
          f"d_img={args.d_img}, threads={args.threads}, chunk {args.per_input_chunk}; fitted KFAC "
          "posterior; ours = MarginalDraws (select), before = JointDraws (weight draws)")
    header = (f"{'score':<9}{'ours wall s':>12}{'cpu s':>8}{'it/s':>9}{'it/cpu-s':>10}"
              f"{'joint wall s':>13}{'cpu s':>8}{'it/s':>9}{'x wall':>8}{'x cpu':>7}"
              f"{'rank corr':>10}{'med rel':>8}{'joint/joint':>12}{'med rel':>8}")
    print(header)
    print("-" * len(header))
    def med_rel(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.median(np.abs(a - b) / np.abs(b).clip(1e-12)))

    for name in ("bald", "entropy"):
        res = {}
        for kind, seed in ((MarginalDraws, args.seed), (JointDraws, args.seed),
                           (JointDraws, args.seed + 1)):
            r: dict = {}
            with peak_memory(r):
                draws = kind.from_posterior(post, text_act, args.k,
                                            torch.Generator().manual_seed(seed), device="cpu")
                r["scores"] = score_pool(draws, pool, name, chunk_size=args.per_input_chunk,
                                         progress=False)
            res[kind, seed] = r
            del draws
        ours, joint = res[MarginalDraws, args.seed], res[JointDraws, args.seed]
        joint2 = res[JointDraws, args.seed + 1]["scores"]
        print(f"{name:<9}{ours['seconds']:>12.1f}{ours['cpu']:>8.1f}"
              f"{args.n / ours['seconds']:>9.0f}{args.n / ours['cpu']:>10.0f}"
              f"{joint['seconds']:>13.1f}{joint['cpu']:>8.1f}{args.n / joint['seconds']:>9.0f}"
              f"{joint['seconds'] / ours['seconds']:>8.1f}{joint['cpu'] / ours['cpu']:>7.1f}"
              f"{spearman(ours['scores'], joint['scores']):>10.3f}"
              f"{med_rel(ours['scores'], joint['scores']):>8.3f}"
              f"{spearman(joint2, joint['scores']):>12.3f}{med_rel(joint2, joint['scores']):>8.3f}")


def bench_greedy(args, head, text_act, pool, target) -> list[dict]:
    """One-pass score of the pool vs the greedy batch rules on its prefiltered best rows: the
    label-free greedy rule and the pseudo-label rule with each ``--pseudo-samples`` S."""
    post = BayesVLMPosterior.fit(head, pool[:4096], text_act, mode="labels", device="cpu",
                                 progress=False)
    n_cand = min(args.n, int(np.ceil(args.prefilter * args.budget)))
    m_greedy = args.greedy_targets or args.m
    samples = [int(s) for s in args.pseudo_samples.split(",") if s]
    rows = []
    for name in args.greedy.split(","):
        is_epig = name == "epig"
        one: dict = {}
        with peak_memory(one):  # the draws and chunk size `select` uses for this score
            kind = JointDraws if is_epig else MarginalDraws
            draws = kind.from_posterior(post, text_act, args.k,
                                        torch.Generator().manual_seed(args.seed), device="cpu")
            tp = draws.probs_chunked(target) if is_epig else None
            chunk = args.chunk_size if is_epig else min(args.chunk_size, SCORING_CHUNK)
            scores = score_pool(draws, pool, name, target_probs=tp, chunk_size=chunk,
                                progress=False)
        del draws, tp
        cand = np.argsort(-scores, kind="stable")[:n_cand]
        kw = dict(heuristic=name, target_act=target[:m_greedy] if is_epig else None,
                  n_draws=args.k, device="cpu")
        runs = [("greedy", partial(greedy_batch, **kw))]
        runs += [(f"pseudo S={s}", partial(pseudo_label_batch, pseudo_samples=s, **kw))
                 for s in samples]
        for rule, fn in runs:
            greedy: dict = {}
            with peak_memory(greedy):
                batch = fn(post, text_act, pool[cand], args.budget,
                           generator=torch.Generator().manual_seed(args.seed))
            cv = np.array([p.c * p.v for p in batch.picks])
            rows.append({
                "score": name, "rule": rule, "one_wall": one["seconds"], "one_cpu": one["cpu"],
                "one_peak": one["peak"], "g_wall": greedy["seconds"], "g_cpu": greedy["cpu"],
                "g_peak": greedy["peak"], "evals": batch.evaluations, "cv": float(np.median(cv)),
                "shared": len(set(cand[batch.positions].tolist())
                              & set(cand[:args.budget].tolist())),
            })
            print(f"{name} {rule}: one-pass {one['seconds']:.1f} s ({one['cpu']:.1f} cpu s), "
                  f"batch phase {greedy['seconds']:.1f} s ({greedy['cpu']:.1f} cpu s)",
                  flush=True)
    print(f"\nGreedy batch rules: N={args.n} pool, budget {args.budget}, L={n_cand} candidates "
          f"(prefilter {args.prefilter:g} x budget), M={m_greedy} targets in the batch phase "
          f"(one-pass EPIG: M={args.m}), C={args.c}, K={args.k}, threads={args.threads}")
    print("ratio = (one-pass + batch phase) / one-pass; greedy = label-free conditioning, "
          "pseudo S = conditioning on S sampled labels per pick (acquisition/pseudo_label.py); "
          "evals = candidate scorings in the batch phase (each over all S branches); c·v = "
          "median over picks (a pick shrinks its own variance by 1/(1 + c·v)); shared = picks "
          "also in the one-pass top-budget")
    header = (f"{'score':<7}{'rule':<12}{'one-pass wall s':>16}{'cpu s':>9}{'MB':>7}"
              f"{'batch wall s':>14}{'cpu s':>9}{'MB':>7}{'ratio wall':>12}{'ratio cpu':>11}"
              f"{'evals':>8}{'c·v':>10}{'shared':>8}")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['score']:<7}{r['rule']:<12}{r['one_wall']:>16.1f}{r['one_cpu']:>9.1f}"
              f"{r['one_peak'] / 2**20:>7.0f}{r['g_wall']:>14.1f}{r['g_cpu']:>9.1f}"
              f"{r['g_peak'] / 2**20:>7.0f}{(r['one_wall'] + r['g_wall']) / r['one_wall']:>12.2f}"
              f"{(r['one_cpu'] + r['g_cpu']) / r['one_cpu']:>11.2f}{r['evals']:>8d}"
              f"{r['cv']:>10.2e}{r['shared']:>8d}")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=100_000, help="pool items")
    ap.add_argument("--m", type=int, default=1_000, help="target items (EPIG)")
    ap.add_argument("--c", type=int, default=65, help="classes")
    ap.add_argument("--k", type=int, default=100, help="joint posterior draws")
    ap.add_argument("--embed-dim", type=int, default=512)
    ap.add_argument("--d-img", type=int, default=768)
    ap.add_argument("--d-txt", type=int, default=512)
    ap.add_argument("--spread", type=float, default=0.3, help="draw std relative to the MAP")
    ap.add_argument("--baseline-n", type=int, default=100, help="pool items for the baseline")
    ap.add_argument("--chunk-size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--top-classes", type=int, default=10,
                    help="classes kept per input by the coarsened EPIG lower bound")
    ap.add_argument("--only", choices=["epig", "epig-top", "bald", "greedy", "kernel",
                                       "per-input"],
                    help="benchmark one score only (greedy, kernel, per-input: only that table)")
    ap.add_argument("--kernel-n", type=int, default=64, help="pool items for the EPIG kernel")
    ap.add_argument("--per-input-chunk", type=int, default=128,
                    help="pool chunk for the per-input table")
    ap.add_argument("--greedy", default="",
                    help="comma list of epig,bald: also time the greedy batch rule")
    ap.add_argument("--budget", type=int, default=500, help="greedy batch size")
    ap.add_argument("--prefilter", type=float, default=4.0,
                    help="greedy candidates = prefilter x budget best one-pass rows")
    ap.add_argument("--greedy-targets", type=int, default=None,
                    help="targets used in the greedy phase (default: all M)")
    ap.add_argument("--pseudo-samples", default="2",
                    help="comma list of S: also time the pseudo-label rule with S branches "
                    "('' = not)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    head, img_w, txt_w, text_act, pool, target = make_problem(args)
    if args.only == "greedy":
        bench_greedy(args, head, text_act, pool, target)
        return
    if args.only == "kernel":
        bench_kernel(args, img_w, txt_w, text_act, head, pool, target)
        return
    if args.only == "per-input":
        bench_per_input(args, head, text_act, pool)
        return
    nb = min(args.baseline_n, args.n)
    rows = []

    for name in (args.only,) if args.only else ("epig", "epig-top", "bald"):
        is_epig = name.startswith("epig")
        heuristic = name
        if name == "epig-top":
            heuristic = Heuristic("epig", partial(epig_scores, top_classes=args.top_classes),
                                  ("target_probs",))
        ours: dict = {}
        with peak_memory(ours):
            draws = JointDraws.from_weights(img_w, txt_w, text_act, head, device="cpu")
            tp = draws.probs_chunked(target) if is_epig else None
            scores = score_pool(draws, pool, heuristic, target_probs=tp,
                                chunk_size=args.chunk_size, progress=False)
        base_fixed: dict = {}
        with peak_memory(base_fixed):
            txt = baseline_text(txt_w, text_act)
            t = baseline_probs(img_w, txt, target, head.logit_scale) if is_epig else None
        base: dict = {}
        with peak_memory(base):
            p = baseline_probs(img_w, txt, pool[:nb], head.logit_scale)
            ref = baseline_epig(p, t) if is_epig else baseline_bald(p)
        # the baseline is exact EPIG: for epig-top this is the bound's error
        diff = float(np.abs(scores[:nb] - ref.double().numpy()).max())
        scale = args.n / nb  # linear extrapolation of the per-item part
        rows.append({
            "score": name,
            "ours_wall": ours["seconds"], "ours_cpu": ours["cpu"], "ours_peak": ours["peak"],
            "base_wall": base_fixed["seconds"] + base["seconds"] * scale,
            "base_cpu": base_fixed["cpu"] + base["cpu"] * scale,
            "base_peak": max(base_fixed["peak"], base["peak"]),
            "diff": diff, "mean": float(np.mean(scores)),
        })
        del draws, tp, t, p, txt

    print(f"\nN={args.n} pool, M={args.m} targets, C={args.c}, K={args.k}, "
          f"D={args.embed_dim}, d_img={args.d_img}, threads={args.threads}; baseline timed on "
          f"{nb} pool items" + (" and extrapolated linearly to N" if nb < args.n else ""))
    print("it/s = pool items per second of wall time; ratios = baseline time / ours "
          "(wall, and CPU time, which is robust to other jobs on a shared machine)")
    header = (f"{'score':<9}{'ours wall s':>12}{'ours cpu s':>11}{'ours it/s':>11}"
              f"{'ours MB':>9}{'base wall s':>13}{'base cpu s':>11}{'base it/s':>11}"
              f"{'base MB':>9}{'x wall':>8}{'x cpu':>7}{'max|diff|':>11}{'mean':>10}")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['score']:<9}{r['ours_wall']:>12.1f}{r['ours_cpu']:>11.1f}"
              f"{args.n / r['ours_wall']:>11.1f}{r['ours_peak'] / 2**20:>9.0f}"
              f"{r['base_wall']:>13.1f}{r['base_cpu']:>11.1f}{args.n / r['base_wall']:>11.1f}"
              f"{r['base_peak'] / 2**20:>9.0f}{r['base_wall'] / r['ours_wall']:>8.1f}"
              f"{r['base_cpu'] / r['ours_cpu']:>7.1f}{r['diff']:>11.1e}{r['mean']:>10.2e}")
    full = args.k * args.n * args.embed_dim * 4
    print(f"epig-top = EPIG over each input's top {args.top_classes} classes + 'other' (a "
          "lower bound on EPIG); its max|diff| is its error against the exact baseline.")
    print(f"\nbase MB is measured on {nb} items; at N={args.n} the baseline's materialised "
          f"per-draw embeddings alone take {full / 2**30:.2f} GiB (ours: one chunk).")
    bench_kernel(args, img_w, txt_w, text_act, head, pool, target)
    bench_per_input(args, head, text_act, pool)
    if args.greedy:
        bench_greedy(args, head, text_act, pool, target)

if __name__ == "__main__":
    main()
