"""Posterior benchmarks: ours vs a baseline, from the same run, printed as one table.

Each ``measure_*`` function times one thing and returns :class:`Row`s; ``main`` runs them
and prints the table. Synthetic activations with ViT-B/32 dimensions (d_img 768, d_txt 512,
D 512); nothing is downloaded.

    .venv/bin/python benchmarks/posterior.py --pairs 10000 --batch-size 4096
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table

from activevlm.bayes.kfac import estimate_kfac, ggn_sum
from activevlm.models.head import ProjectionHead
from activevlm.utils.device import resolve_device

D_IMG, D_TXT, D = 768, 512, 512


@dataclass
class Row:
    """One line of the table; ``ratio`` = baseline / ours (> 1: ours is faster)."""

    name: str
    ours: float
    baseline: float
    unit: str
    note: str = ""

    @property
    def ratio(self) -> float:
        return self.baseline / self.ours


def synthetic(n: int, device: torch.device, seed: int = 0):
    """A random ViT-B/32-shaped head and ``n`` aligned activation pairs."""
    g = torch.Generator().manual_seed(seed)
    head = ProjectionHead(torch.randn(D, D_IMG, generator=g) / D_IMG ** 0.5,
                          torch.randn(D, D_TXT, generator=g) / D_TXT ** 0.5, 100.0)
    img = torch.randn(n, D_IMG, generator=g)
    txt = img[:, :D_TXT] + 0.5 * torch.randn(n, D_TXT, generator=g)   # correlated pairs
    return head, img.to(device), txt.to(device)


def _timed(fn: Callable[[], object], device: torch.device) -> tuple[float, object]:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0, out


def naive_factors(head: ProjectionHead, img: torch.Tensor, txt: torch.Tensor, batch_size: int,
                  rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Baseline: per-sample loop, H_i = s² J Yᵀ(diag p − ppᵀ)Y J built explicitly (image side
    and text side) for the pairs in ``rows`` (all in the first class batch; its embeddings are
    computed once); returns the unscaled sums (Σ H_img, Σ H_txt)."""
    s = head.logit_scale
    sl = slice(0, min(batch_size, img.shape[0]))
    g_all, h_all = head.image_embeddings(img[sl]), head.text_embeddings(txt[sl])
    sides = ((g_all, F.normalize(h_all, dim=-1)), (h_all, F.normalize(g_all, dim=-1)))
    sums = [torch.zeros(D, D, dtype=torch.float64, device=img.device) for _ in range(2)]
    eye = torch.eye(D, device=img.device)
    for i in rows.tolist():
        for k, (Q, Y) in enumerate(sides):
            rho = Q[i].norm()
            qh = Q[i] / rho
            J = (eye - torch.outer(qh, qh)) / rho
            p = torch.softmax(s * Y @ qh, 0)
            M = Y.T @ (p[:, None] * Y) - torch.outer(Y.T @ p, Y.T @ p)
            sums[k] += (s ** 2 * J @ M @ J).double()
    return sums[0], sums[1]


def measure_kfac_fit(n_pairs: int, batch_size: int, naive_samples: int,
                     device: torch.device) -> list[Row]:
    """KFAC factor fitting (both projections, InfoNCE, in-batch negatives) vs the naive
    per-sample GGN loop timed on ``naive_samples`` pairs and extrapolated to ``n_pairs``."""
    head, img, txt = synthetic(n_pairs, device)

    def ours():
        return estimate_kfac(head, img, txt, mode="pairs", batch_size=batch_size,
                             device=device, progress=False)

    estimate_kfac(head, img[:256], txt[:256], batch_size=256, device=device, progress=False)
    t_ours, (fi, ft) = _timed(ours, device)

    # the naive loop on a subsample of the first class batch, extrapolated linearly
    rows = torch.arange(min(naive_samples, batch_size, n_pairs))
    h_dev = head.to(device)
    t_naive, (Hi, Ht) = _timed(lambda: naive_factors(h_dev, img, txt, batch_size, rows), device)
    t_naive_full = t_naive / len(rows) * n_pairs
    err = _naive_agreement(h_dev, img, txt, batch_size, rows, Hi, Ht)
    per = 1e4 / n_pairs
    return [Row(
        f"KFAC fit, {n_pairs} pairs, batch {batch_size} ({device.type})",
        t_ours * per, t_naive_full * per, "s / 10^4 pairs",
        f"naive: {len(rows)} pairs (both sides) timed, extrapolated linearly; "
        f"max rel diff of ΣH vs naive {err:.1e}; N = {fi.num_samples}/{ft.num_samples}",
    )]


def _naive_agreement(head: ProjectionHead, img, txt, batch_size: int, rows: torch.Tensor,
                     Hi: torch.Tensor, Ht: torch.Tensor) -> float:
    """Max relative difference between :func:`ggn_sum` and the naive loop on ``rows``."""
    sl = slice(0, min(batch_size, img.shape[0]))
    g_all, h_all = head.image_embeddings(img[sl]), head.text_embeddings(txt[sl])
    ours_i = ggn_sum(g_all[rows], F.normalize(h_all, dim=-1), head.logit_scale).double()
    ours_t = ggn_sum(h_all[rows], F.normalize(g_all, dim=-1), head.logit_scale).double()
    return max(float((ours_i - Hi).abs().max() / Hi.abs().max()),
               float((ours_t - Ht).abs().max() / Ht.abs().max()))


def naive_probcosine(mu_g, v_g, mu_h, v_h, B_img_inv, B_txt_inv, s: float, pairs):
    """Baseline: the same ProbCosine math one (image, class) pair at a time, with explicit
    ``[D, D]`` covariances. Returns ``(mean, var)`` logits ``[len(pairs)]``."""
    means, variances = [], []
    for n, c in pairs:
        Sg, Sh = v_g[n] * B_img_inv, v_h[c] * B_txt_inv
        norm = (mu_g[n] @ mu_g[n] + Sg.trace()) * (mu_h[c] @ mu_h[c] + Sh.trace())
        var_dot = mu_g[n] @ Sh @ mu_g[n] + mu_h[c] @ Sg @ mu_h[c] + (Sg * Sh.T).sum()
        means.append(s * (mu_g[n] @ mu_h[c]) / norm.sqrt())
        variances.append(s * s * var_dot / norm)
    return torch.stack(means), torch.stack(variances)


def measure_probcosine(n_images: int, n_classes: int, naive_pairs: int,
                       device: torch.device) -> list[Row]:
    """``logit_moments`` (full covariance, chunked matrix products) for all ``n_images x
    n_classes`` pairs vs :func:`naive_probcosine` timed on ``naive_pairs`` pairs (embedding
    moments precomputed for it, so only the per-pair math is timed) and extrapolated."""
    from activevlm.bayes.posterior import BayesVLMPosterior, ModalityPosterior
    from activevlm.bayes.probcosine import logit_moments

    head, img, _ = synthetic(n_images, device)
    g = torch.Generator().manual_seed(1)
    txt = torch.randn(n_classes, D_TXT, generator=g).to(device)

    def factors(d: int):
        X = torch.randn(4 * d, d, generator=g)
        Y = torch.randn(4 * D, D, generator=g)
        return X.T @ X / (4 * d) ** 0.5, Y.T @ Y / (4 * D) ** 0.5

    mods = [ModalityPosterior(W.float(), *factors(W.shape[1]), 1.0, 10.0)
            for W in (head.image_weight, head.text_weight)]
    post = BayesVLMPosterior(*mods, head).to(device)
    logit_moments(post, img[:64], txt, chunk_size=64)  # warm-up
    t_ours, (mean, var) = _timed(lambda: logit_moments(post, img, txt), device)

    mu_g, v_g = post.image.embedding_moments(img)
    mu_h, v_h = post.text.embedding_moments(txt)
    pairs = [(i % n_images, (i * 7) % n_classes) for i in range(naive_pairs)]
    t_naive, (nm, nv) = _timed(lambda: naive_probcosine(
        mu_g, v_g, mu_h, v_h, post.image.B_inv, post.text.B_inv, head.logit_scale, pairs),
        device)
    rows_, cols_ = torch.tensor([p[0] for p in pairs]), torch.tensor([p[1] for p in pairs])
    err = max(float(((nm - mean[rows_, cols_]).abs() / mean.abs().max()).max()),
              float(((nv - var[rows_, cols_]).abs() / var.abs().max()).max()))
    total = n_images * n_classes
    per = 1e6 / total
    return [Row(
        f"ProbCosine full, {n_images} images x {n_classes} classes, D {D} ({device.type})",
        t_ours * per, t_naive / naive_pairs * 1e6, "s / 10^6 pairs",
        f"ours {total / t_ours:.3g} pairs/s, naive {naive_pairs / t_naive:.3g} pairs/s "
        f"({naive_pairs} pairs timed); max rel diff vs naive {err:.1e}",
    )]


def print_table(rows: list[Row]) -> None:
    table = Table(title="activevlm posterior benchmarks (ours vs baseline, same run)")
    for col in ("measurement", "ours", "baseline", "unit", "ratio", "notes"):
        table.add_column(col)
    for r in rows:
        table.add_row(r.name, f"{r.ours:.3g}", f"{r.baseline:.3g}", r.unit, f"{r.ratio:.1f}x",
                      r.note)
    Console(width=200).print(table)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=10_000)
    ap.add_argument("--batch-size", type=int, default=4096,
                    help="class batch (in-batch negatives per sample)")
    ap.add_argument("--naive-samples", type=int, default=16)
    ap.add_argument("--pc-images", type=int, default=20_000, help="ProbCosine: images")
    ap.add_argument("--pc-classes", type=int, default=1000, help="ProbCosine: classes")
    ap.add_argument("--pc-naive-pairs", type=int, default=2000)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    rows = measure_kfac_fit(args.pairs, args.batch_size, args.naive_samples, device)
    rows += measure_probcosine(args.pc_images, args.pc_classes, args.pc_naive_pairs, device)
    print_table(rows)


if __name__ == "__main__":
    main()
