"""Regime-aware strategies (``auto``, ``tcm``): coverage for the cold start, then uncertainty,
switched by the run's own state; and what ``select`` says about the round."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from activevlm.acquisition import STRATEGIES, BatchOptions, Phase, PhasedStrategy, make_strategy
from activevlm.bayes.from_pool import fit_pool_posterior
from activevlm.cli.main import app
from activevlm.runs import RunState, SelectConfig
from activevlm.runs.select import select_round
from tests.toy import toy_pool

runner = CliRunner()


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    return toy_pool(tmp_path_factory.mktemp("toy"), domains=("photo", "sketch", "art"), per=10)


@pytest.fixture(scope="module")
def posterior(pool):
    return fit_pool_posterior(pool, split="train", progress=False)


def state_with_labels(pool, path, n: int) -> RunState:
    state = RunState.create(path, str(pool.path), pool.model_id, pool.classnames)
    items = pool.items[pool.items["split"] == "train"].iloc[:n]
    for sid, label in zip(items["sample_id"], items["label"], strict=True):
        state.labels[sid] = int(label)
    state.save()
    return state


def queue(pool, path, strategy, n_labels, posterior=None, **batch):
    config = SelectConfig(budget=6, strategy=strategy, target_domain="sketch", n_draws=10,
                          seed=5, batch=BatchOptions(**batch))
    return select_round(pool, state_with_labels(pool, path, n_labels), config,
                        posterior=posterior, progress=False)


def test_the_switch_is_one_label_per_class():
    spec = STRATEGIES["auto"]
    assert (spec.early, spec.late) == ("random", "bayes-margin")
    assert spec.bayesian and STRATEGIES["tcm"].early == "typiclust"
    assert spec.phase(0, 4) is Phase.COVERAGE
    assert spec.phase(3, 4) is Phase.COVERAGE
    assert spec.phase(4, 4) is Phase.UNCERTAINTY
    assert spec.phase(99, 100) is Phase.COVERAGE


def test_cold_start_queues_exactly_what_random_targeted_queues(pool, posterior, tmp_path):
    auto = queue(pool, tmp_path / "a", "auto", 0, posterior)
    random = queue(pool, tmp_path / "r", "random", 0)
    assert auto.phase == "coverage"
    assert list(auto.queue["sample_id"]) == list(random.queue["sample_id"])


def test_after_the_switch_the_posterior_margin_chooses(pool, posterior, tmp_path):
    n = len(pool.classnames)  # 4 labels: one per class on average
    auto = queue(pool, tmp_path / "a", "auto", n, posterior)
    margin = queue(pool, tmp_path / "m", "bayes-margin", n, posterior)
    random = queue(pool, tmp_path / "r", "random", n)
    assert auto.phase == "uncertainty"
    assert list(auto.queue["sample_id"]) == list(margin.queue["sample_id"])
    assert list(auto.queue["sample_id"]) != list(random.queue["sample_id"])
    state = RunState.load(tmp_path / "a")
    assert state.rounds[-1]["phase"] == "uncertainty"


def test_batch_options_are_the_uncertainty_phases(pool, posterior, tmp_path):
    n = len(pool.classnames)
    auto = queue(pool, tmp_path / "a", "auto", n, posterior, class_balanced=True)
    margin = queue(pool, tmp_path / "m", "bayes-margin", n, posterior, class_balanced=True)
    assert list(auto.queue["sample_id"]) == list(margin.queue["sample_id"])
    cold = queue(pool, tmp_path / "c", "auto", 0, posterior, class_balanced=True)
    random = queue(pool, tmp_path / "r", "random", 0)
    assert list(cold.queue["sample_id"]) == list(random.queue["sample_id"])
    with pytest.raises(ValueError, match="needs strategy epig or bald, not 'bayes-margin'"):
        make_strategy("auto", has_target=True, batch=BatchOptions(rule="greedy"))


def test_tcm_starts_with_typiclust_then_margin(pool, tmp_path):
    strategy = make_strategy("tcm", has_target=True)
    assert isinstance(strategy, PhasedStrategy) and strategy.label == "tcm-targeted"
    cold = queue(pool, tmp_path / "a", "tcm", 0)
    typ = queue(pool, tmp_path / "t", "typiclust", 0)
    assert list(cold.queue["sample_id"]) == list(typ.queue["sample_id"])
    warm = queue(pool, tmp_path / "b", "tcm", 8)
    margin = queue(pool, tmp_path / "m", "margin", 8)
    assert list(warm.queue["sample_id"]) == list(margin.queue["sample_id"])


def test_select_says_target_neighbourhood_and_phase(pool, tmp_path):
    run = tmp_path / "run"
    args = ["select", "--pool", str(pool.path), "--target", "sketch", "--strategy", "auto",
            "--draws", "10", "--run", str(run), "--no-progress"]
    out = runner.invoke(app, [*args, "--budget", "3"])
    assert out.exit_code == 0, out.output
    text = " ".join(out.output.split())
    assert "target sketch: chose among the 30 pool items nearest to it" in text
    assert "phase: coverage (0 items labelled, queued or skipped before" in text
    assert "switch at 1 per class x 4 classes): random" in text
    assert "nearly untargeted" not in text  # 30 of the 72 train candidates
    out = runner.invoke(app, [*args, "--budget", "4", "--force"])
    text = " ".join(out.output.split())
    assert out.exit_code == 0, out.output
    assert "phase: uncertainty (3 items" not in text  # 3 < 4: still coverage
    assert "warning: the neighbourhood holds most of the pool" in text  # 40 of the 69 left
    out = runner.invoke(app, [*args, "--budget", "2", "--force"])
    text = " ".join(out.output.split())
    assert "phase: uncertainty (7 items labelled, queued or skipped before" in text
    assert "bayes-margin" in text
