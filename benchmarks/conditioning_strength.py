"""How far does one label move a fitted KFAC posterior, and does greedy EPIG then differ from
top-k? Label-free conditioning shrinks a pick's own embedding variance by 1/(1 + c·v)
(MATH.md §6); this prints c·v over the target's unlabelled items and, per pseudo-count n,
greedy EPIG vs one-pass top-k EPIG on the same draws: shared picks and the mean pairwise
cosine similarity of each batch's image embeddings.

    python benchmarks/conditioning_strength.py                      # demo world, clipart
    python benchmarks/conditioning_strength.py --pool pools/pacs --target sketch \
        --fit-domains photo,art_painting
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from activevlm.acquisition import PathwiseConditioning, greedy_batch, score_pool
from activevlm.bayes import JointDraws
from activevlm.bayes.from_pool import fit_pool_posterior
from activevlm.pool import open_pool


def mean_pairwise_cosine(emb: np.ndarray) -> float:
    e = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    s = e @ e.T
    return float((s.sum() - len(e)) / (len(e) * (len(e) - 1)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pool", default=None, help="pool directory (default: the demo world)")
    ap.add_argument("--target", default="clipart", help="target domain")
    ap.add_argument("--fit-domains", default="product,photo",
                    help="comma list of domains the posterior is fitted on (train split)")
    ap.add_argument("--pseudo-counts", default="1,10,100")
    ap.add_argument("--budget", type=int, default=25)
    ap.add_argument("--m", type=int, default=128, help="EPIG targets (target val split)")
    ap.add_argument("--k", type=int, default=50, help="joint draws")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.pool is None:
        from activevlm.demo.pool import demo_pool

        pool = demo_pool(progress=False)
    else:
        pool = open_pool(args.pool)
    text = pool.text_activations
    cand = pool.indices(domain=args.target, split="train")
    tgt = pool.indices(domain=args.target, split="val")[: args.m]
    cand_act = np.asarray(pool.image_activations[cand])
    tgt_act = np.asarray(pool.image_activations[tgt])
    emb = pool.image_embeddings(cand).numpy()
    print(f"pool {pool.path}, target {args.target}: {len(cand)} candidates (train), "
          f"{len(tgt)} EPIG targets (val), K={args.k}, budget {args.budget}, posterior fitted "
          f"on the train split of {args.fit_domains}")
    header = (f"{'n':>6}{'lambda':>10}{'c·v p50':>10}{'c·v p90':>10}{'c·v max':>10}"
              f"{'shared':>8}{'cos top-k':>11}{'cos greedy':>12}")
    print(header)
    print("-" * len(header))
    for n in (float(x) for x in args.pseudo_counts.split(",")):
        post = fit_pool_posterior(pool, domain=args.fit_domains.split(","), split="train",
                                  pseudo_count=n, progress=False, device="cpu")
        draws = JointDraws.from_posterior(post, text, args.k,
                                          torch.Generator().manual_seed(args.seed), device="cpu")
        state = PathwiseConditioning(post, draws, text, cand_act)
        cv = (state.curvature * ((state.act @ state.a_tilde_inv) * state.act).sum(1)).numpy()
        scores = score_pool(draws, cand_act, "epig", target_probs=draws.probs(tgt_act),
                            progress=False)
        top = np.argsort(-scores, kind="stable")[: args.budget]
        greedy = greedy_batch(post, text, cand_act, args.budget, target_act=tgt_act,
                              n_draws=args.k, generator=torch.Generator().manual_seed(args.seed),
                              device="cpu").positions
        p50, p90 = np.quantile(cv, [0.5, 0.9])
        print(f"{n:>6g}{post.image.prior_precision:>10.3g}{p50:>10.2e}{p90:>10.2e}"
              f"{cv.max():>10.2e}{len(set(top) & set(greedy)):>8d}"
              f"{mean_pairwise_cosine(emb[top]):>11.3f}{mean_pairwise_cosine(emb[greedy]):>12.3f}")
    print("c·v: a label shrinks its own image's embedding variance by 1/(1 + c·v); shared = "
          "greedy picks also in top-k")


if __name__ == "__main__":
    main()
