"""The demo-world active-learning benchmark (benchmarks/configs/demo.yaml), run in CI so that a
regression in any claim it supports turns CI red. Margins are the measured effects minus
several standard errors (3 seeds; numbers in the comments are from the full grid)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from activevlm.bench import run_grid

CONFIG = Path(__file__).parents[1] / "benchmarks" / "configs" / "demo.yaml"
STRATEGIES = ["random", "random-targeted", "entropy-targeted", "epig", "epig-targeted", "bald"]


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> pd.DataFrame:
    root = tmp_path_factory.mktemp("demo-bench")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(root / "cache"))
        out = run_grid(CONFIG, root / "out", strategies=STRATEGIES, progress=False,
                       log=lambda *a: None)
        return pd.read_parquet(out)


def at(results: pd.DataFrame, strategy: str, n_labels: int, column: str = "accuracy"):
    rows = results[(results.strategy == strategy) & (results.n_labels == n_labels)]
    return rows.set_index("seed")[column]


@pytest.mark.slow
def test_labels_fix_the_target_and_targeting_beats_random(results):
    assert len(results) == len(STRATEGIES) * 3 * 5
    zero_shot = at(results, "random", 0).mean()  # 0.290
    for s in STRATEGIES:
        assert at(results, s, 100).mean() > zero_shot + 0.35  # all >= 0.76 measured
    random100 = at(results, "random", 100)
    # measured +0.102 ± 0.004 and +0.073 ± 0.005 (paired by seed)
    assert (at(results, "entropy-targeted", 100) - random100).mean() > 0.05
    assert (at(results, "random-targeted", 100) - random100).mean() > 0.04


@pytest.mark.slow
def test_epig_beats_random_once_the_batch_is_not_redundant(results):
    # measured +0.059 ± 0.019 (75) and +0.037 ± 0.010 (100); at 25 labels top-k EPIG is
    # -0.024 ± 0.058 (17-19 of its first 25 picks share one predicted class). BALD is not
    # asserted: it does not beat random robustly here (-0.092 at 25, +0.018 ± 0.012 at 100).
    for n in (75, 100):
        assert (at(results, "epig", n) - at(results, "random", n)).mean() > 0.0


@pytest.mark.slow
def test_bayesian_zero_shot_is_better_calibrated_on_the_target(results):
    ece, bayes_ece = at(results, "random", 0, "ece"), at(results, "random", 0, "bayes_ece")
    assert (bayes_ece < ece - 0.05).all()  # 0.379 vs 0.503
