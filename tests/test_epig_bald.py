"""EPIG and BALD against brute force on a linear-softmax model with a Gaussian weight posterior.

Model: p(y | x, W) = softmax(W x), x ∈ R^5, C = 4 classes, W ~ N(W*, σ²) entrywise.
Reference: 2·10^5 explicit weight draws, explicit logits, the joint of every (pool, target)
pair by einsum and EPIG in its KL form (not the entropy rewrite used by the library); BALD as
the mean KL(p_k ‖ p̄) (again not the entropy form).
"""

from __future__ import annotations

import pytest
import torch

from activevlm.acquisition import epig_scores, get_heuristic
from activevlm.acquisition.epig import epig_chunk_sizes, subnormal_safe_floor

D_IN, C, N_POOL, M_TARGET, SIGMA = 5, 4, 6, 5, 0.7
K_REFERENCE = 200_000
SEEDS = range(8)


@pytest.fixture(scope="module")
def model():
    g = torch.Generator().manual_seed(0)
    w_star = torch.randn(C, D_IN, generator=g, dtype=torch.float64)
    pool = torch.randn(N_POOL, D_IN, generator=g, dtype=torch.float64)
    target = torch.randn(M_TARGET, D_IN, generator=g, dtype=torch.float64)
    return w_star, pool, target


def draw_weights(w_star: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    return w_star + SIGMA * torch.randn(k, *w_star.shape, generator=gen, dtype=w_star.dtype)


def probs_of(w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``[K, C, d], [N, d] -> [K, N, C]``."""
    return torch.softmax(torch.einsum("kcd,nd->knc", w, x), dim=-1)


def epig_kl_form(p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Straight from the definition: mean over targets of KL(joint ‖ product of marginals)."""
    joint = torch.einsum("knc,kmd->nmcd", p, t) / p.shape[0]
    indep = p.mean(0)[:, None, :, None] * t.mean(0)[None, :, None, :]
    return (joint * (joint.log() - indep.log())).sum((2, 3)).mean(1)


@pytest.fixture(scope="module")
def reference(model):
    w_star, pool, target = model
    w = draw_weights(w_star, K_REFERENCE, torch.Generator().manual_seed(12345))
    p, t = probs_of(w, pool), probs_of(w, target)
    bald_ref = (p * (p.log() - p.mean(0).log())).sum(-1).mean(0)
    return epig_kl_form(p, t), bald_ref


def mean_over_seeds(model, k: int, joint: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(EPIG, BALD) ``[N]`` averaged over seeds. ``joint=False`` is the counterfactual of the
    reference code: every input gets its own independent weight draws."""
    w_star, pool, target = model
    epigs, balds = [], []
    for s in SEEDS:
        gen = torch.Generator().manual_seed(1000 + s)
        if joint:
            w = draw_weights(w_star, k, gen)
            p, t = probs_of(w, pool), probs_of(w, target)
        else:
            p = torch.cat([probs_of(draw_weights(w_star, k, gen), x[None]) for x in pool], 1)
            t = torch.cat([probs_of(draw_weights(w_star, k, gen), x[None]) for x in target], 1)
        epigs.append(get_heuristic("epig")(p, target_probs=t))
        balds.append(get_heuristic("bald")(p))
    return torch.stack(epigs).mean(0), torch.stack(balds).mean(0)


def test_identities_on_the_same_draws(model):
    """Entropy rewrite + chunked matmuls == KL form on identical draws (float64 round-off)."""
    w_star, pool, target = model
    w = draw_weights(w_star, 300, torch.Generator().manual_seed(7))
    p, t = probs_of(w, pool), probs_of(w, target)
    expected = epig_kl_form(p, t)
    for max_elements in (C * C, 3 * C * C, 1 << 20):  # 1x1 blocks, ragged blocks, one block
        torch.testing.assert_close(epig_scores(p, t, max_elements=max_elements), expected,
                                   rtol=0, atol=1e-12)
    bald_kl = (p * (p.log() - p.mean(0).log())).sum(-1).mean(0)
    torch.testing.assert_close(get_heuristic("bald")(p), bald_kl, rtol=0, atol=1e-12)
    # float32 inputs: same numbers to float32 accuracy
    torch.testing.assert_close(epig_scores(p.float(), t.float()).double(), expected,
                               rtol=0, atol=2e-6)


def test_epig_and_bald_match_brute_force_and_do_not_decay(model, reference):
    epig_ref, bald_ref = reference
    assert epig_ref.min() > 1e-3  # the test is only meaningful when there is something to find

    ours_100, bald_100 = mean_over_seeds(model, 100, joint=True)
    ours_1600, bald_1600 = mean_over_seeds(model, 1600, joint=True)
    indep_100, _ = mean_over_seeds(model, 100, joint=False)
    indep_1600, _ = mean_over_seeds(model, 1600, joint=False)
    total = {name: float(v.sum()) for name, v in [
        ("ref", epig_ref), ("ours_100", ours_100), ("ours_1600", ours_1600),
        ("indep_100", indep_100), ("indep_1600", indep_1600)]}

    # Joint draws converge to the brute-force value: 15 % per item, 8 % summed over the pool
    # (measured: <= 6 % and 3 %).
    torch.testing.assert_close(ours_1600, epig_ref, rtol=0.15, atol=0)
    assert abs(total["ours_1600"] - total["ref"]) <= 0.08 * total["ref"]
    # ... and stay put between K = 100 and 1600: only the O(1/K) upward bias of the plug-in
    # estimator separates them (measured +25 % at K = 100), never a collapse.
    assert total["ours_100"] >= 0.95 * total["ref"]
    assert abs(total["ours_100"] - total["ours_1600"]) <= 0.35 * total["ours_1600"]
    # Independent per-input draws: the "joint" is a product of marginals, the estimate is
    # pure finite-K bias and decays like 1/K (measured 0.0194 -> 0.0013, true 0.056).
    assert total["indep_1600"] <= 0.05 * total["ref"]
    assert total["indep_100"] >= 8 * total["indep_1600"]
    assert total["indep_100"] <= 0.5 * total["ours_100"]

    # BALD: 5 % per item at K = 1600 (measured <= 2 %), 15 % at K = 100.
    torch.testing.assert_close(bald_1600, bald_ref, rtol=0.05, atol=0)
    torch.testing.assert_close(bald_100, bald_ref, rtol=0.15, atol=0)


def test_epig_validates_shapes():
    p = torch.full((3, 4, 5), 0.2)
    with pytest.raises(ValueError, match="same K joint draws"):
        epig_scores(p, torch.full((2, 6, 5), 0.2))
    with pytest.raises(ValueError, match="empty"):
        epig_scores(p, torch.full((3, 0, 5), 0.2))
    with pytest.raises(ValueError, match=r"\[K, N, C\]"):
        epig_scores(p[0], p)


def test_chunk_sizes_bound_memory():
    for n, m, c, budget in [(10**6, 1000, 65, 1 << 23), (5, 3, 4, 16), (7, 2000, 10, 999)]:
        nc, mc = epig_chunk_sizes(n, m, c, budget)
        assert 1 <= nc <= n and 1 <= mc <= m
        assert nc * mc * c * c <= max(budget, c * c)


def test_top_class_epig_is_a_tight_lower_bound():
    """Coarsening each input to its top classes + "other" can only lose information (data
    processing), is exact when nothing is dropped, and is close when the tail is small."""
    g = torch.Generator().manual_seed(5)
    k, n, m, c = 64, 40, 30, 12

    def draws(rows: int) -> torch.Tensor:
        """Per-draw predictives around a peaked mean (mean max-probability ~0.56), as for a
        trained model under a posterior."""
        base = 3.0 * torch.randn(1, rows, c, generator=g, dtype=torch.float64)
        return torch.softmax(base + torch.randn(k, rows, c, generator=g, dtype=torch.float64),
                             -1)

    pool, target = draws(n), draws(m)
    exact = epig_scores(pool, target)
    assert torch.allclose(epig_scores(pool, target, top_classes=c), exact)
    assert torch.allclose(epig_scores(pool, target, top_classes=c - 1), exact, atol=1e-12)
    for top in (2, 4, 6):
        coarse = epig_scores(pool, target, top_classes=top)
        assert (coarse <= exact + 1e-12).all()
    assert (epig_scores(pool, target, top_classes=2) <= epig_scores(pool, target,
                                                                    top_classes=6) + 1e-12).all()
    # measured: 7.7 % of the total EPIG lost at 6 of 12 classes, 1.7 % at 8
    rel = (exact - epig_scores(pool, target, top_classes=8)).sum() / exact.sum()
    assert 0 <= rel < 0.04, rel
    # the ranking's head is kept (measured: the same top 10 at 8 classes)
    top10 = set(exact.argsort(descending=True)[:10].tolist())
    top10_coarse = set(epig_scores(pool, target, top_classes=8).argsort(descending=True)[:10]
                       .tolist())
    assert len(top10 & top10_coarse) >= 9


def epig_kl_form_safe(p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """:func:`epig_kl_form` with ``0 log 0 = 0`` (float64 brute force)."""
    joint = torch.einsum("knc,kmd->nmcd", p, t) / p.shape[0]
    indep = p.mean(0)[:, None, :, None] * t.mean(0)[None, :, None, :]
    return (torch.xlogy(joint, joint) - torch.xlogy(joint, indep)).sum((2, 3)).mean(1)


def vit_sized_probs(n: int, m: int, k: int = 100, c: int = 65, seed: int = 0):
    """Per-draw predictives at the sizes ``select`` scores (K = 100, C = 65): peaked means
    (logit std 3) with per-draw spread, float64."""
    g = torch.Generator().manual_seed(seed)

    def draws(rows):
        base = 3.0 * torch.randn(1, rows, c, generator=g, dtype=torch.float64)
        return torch.softmax(base + torch.randn(k, rows, c, generator=g, dtype=torch.float64), -1)

    return draws(n), draws(m)


def test_kernel_is_exact_at_select_sizes():
    """C = 65, K = 100, M = 300: float64 equals the KL-form brute force to 1e-9 relative (the
    issue asks 1e-6; measured 4e-13) for every block shape; float32 is within 3e-7 absolute
    (measured <= 7e-8 over 4 seeds, the kernel before issue 17 <= 5e-8; EPIG here 1e-3 to
    4e-3)."""
    p, t = vit_sized_probs(6, 300)
    expected = epig_kl_form_safe(p, t)
    assert expected.min() > 1e-3
    for max_elements in (1 << 17, 65 * 65, 7 * 65 * 65, 6 * 300 * 65 * 65):
        # one input x 31 targets (dot path), 1 x 1, 1 x 7 (ragged), all in one block (sum path)
        torch.testing.assert_close(epig_scores(p, t, max_elements=max_elements), expected,
                                   rtol=1e-9, atol=0)
    torch.testing.assert_close(epig_scores(p.float(), t.float()).double(), expected,
                               rtol=0, atol=3e-7)


@pytest.mark.parametrize("max_elements", [1 << 17, 1 << 30])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_zero_joint_probabilities_count_as_zero_not_nan(max_elements, dtype):
    """Predictives with exact zeros would make some p̂(y, y*) exactly 0: with the floored
    probabilities the result is finite and equals the brute force (0 log 0 = 0)."""
    p, t = vit_sized_probs(5, 40, k=20, c=8, seed=3)
    p[:, 1, :4] = 0.0  # input 1 never predicts classes 0-3 under any draw
    p[:, 1] /= p[:, 1].sum(-1, keepdim=True)
    t[:, :, 0] = 0.0
    t /= t.sum(-1, keepdim=True)
    expected = epig_kl_form_safe(p, t)
    got = epig_scores(p.to(dtype), t.to(dtype), max_elements=max_elements).double()
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, expected, rtol=0,
                               atol=1e-12 if dtype == torch.float64 else 2e-6)


def test_sharp_predictives_with_subnormal_joints_are_exact():
    """CLIP-sharp predictives (probabilities down to 1e-40): in float32 their products are
    subnormal or 0; with the floor every GEMM product is normal, and the result still equals
    the float64 brute force."""
    p, t = vit_sized_probs(4, 48, k=30, c=16, seed=5)
    p, t = (torch.softmax(12.0 * x.log(), -1) for x in (p, t))
    assert p.min() < 1e-30 and t.min() < 1e-30  # products far below float32's normal range
    floor = subnormal_safe_floor(torch.float32, 30)
    assert floor * (floor / 30) >= torch.finfo(torch.float32).tiny
    got = epig_scores(p.float(), t.float(), max_elements=16 * 16 * 16).double()
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, epig_kl_form_safe(p, t), rtol=0, atol=2e-6)
