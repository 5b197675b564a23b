"""Selection rounds, queues and the select -> label -> select loop through the CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from activevlm.acquisition import BatchOptions, Strategy, make_strategy, probcover, typiclust
from activevlm.bayes.from_pool import fit_pool_posterior
from activevlm.cli.main import app
from activevlm.runs import RunState, SelectConfig
from activevlm.runs import select as select_module
from activevlm.runs.select import select_round
from tests.toy import toy_pool

runner = CliRunner()


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    return toy_pool(tmp_path_factory.mktemp("toy"), domains=("photo", "sketch", "art"), per=10)


@pytest.fixture(scope="module")
def posterior(pool):
    return fit_pool_posterior(pool, split="train", progress=False)


def new_state(pool, path):
    return RunState.create(path, str(pool.path), pool.model_id, pool.classnames)


def queued_ids(result):
    return list(result.queue["sample_id"])


def test_epig_round_queues_unlabelled_train_items(pool, posterior, tmp_path):
    state = new_state(pool, tmp_path / "run")
    config = SelectConfig(budget=7, strategy="epig", target_domain="sketch", n_draws=20,
                          targeted=False)
    result = select_round(pool, state, config, posterior=posterior, progress=False)
    q = result.queue
    assert len(q) == 7 and q["sample_id"].is_unique
    train = set(pool.items.loc[pool.items["split"] == "train", "sample_id"])
    assert set(q["sample_id"]) <= train
    assert (np.diff(q["score"]) <= 1e-12).all()  # top-k: best first
    assert set(q["predicted_label"]) <= set(pool.classnames)
    for kind in ("parquet", "csv", "labelstudio", "scores"):
        assert result.paths[kind].exists()
    scores = pd.read_parquet(result.paths["scores"])
    assert len(scores) == len(train)  # every candidate was scored
    reloaded = RunState.load(state.path)
    assert reloaded.round == 1 and set(reloaded.queued) == set(q["sample_id"])

    second = select_round(pool, reloaded, config, posterior=posterior, progress=False)
    assert not set(queued_ids(second)) & set(q["sample_id"])
    assert second.round == 1


def test_same_seed_same_selection_other_seed_differs(pool, posterior, tmp_path):
    def pick(seed, name):
        cfg = SelectConfig(budget=8, strategy="bald", n_draws=10, seed=seed,
                           batch=BatchOptions(rule="stochastic"))
        return queued_ids(select_round(pool, new_state(pool, tmp_path / name), cfg,
                                       posterior=posterior, progress=False))

    assert pick(3, "a") == pick(3, "b")
    assert pick(3, "a2") != pick(4, "c")


def test_targeted_selection_maps_targets_to_unique_pool_neighbours(pool, posterior, tmp_path):
    state = new_state(pool, tmp_path / "run")
    state.labels[pool.items["sample_id"].iloc[0]] = 0
    config = SelectConfig(budget=6, strategy="entropy", target_domain="sketch", targeted=True)
    q = select_round(pool, state, config, progress=False).queue
    assert len(q) == 6 and q["sample_id"].is_unique
    assert pool.items["sample_id"].iloc[0] not in set(q["sample_id"])
    train = set(pool.items.loc[pool.items["split"] == "train", "sample_id"])
    assert set(q["sample_id"]) <= train


def test_class_balanced_and_dedup(pool, tmp_path):
    cfg = SelectConfig(budget=8, strategy="margin", batch=BatchOptions(class_balanced=True))
    q = select_round(pool, new_state(pool, tmp_path / "a"), cfg, progress=False).queue
    assert len(q) == 8
    # every selected item must be at most one class ahead of the others in the round robin
    counts = q["predicted_label"].value_counts()
    assert counts.max() - counts.min() <= 1 or len(counts) == 1
    cfg = SelectConfig(budget=8, strategy="random",
                       batch=BatchOptions(dedup_similarity=0.999999))
    assert len(select_round(pool, new_state(pool, tmp_path / "b"), cfg,
                            progress=False).queue) == 8


def round_robin_neighbourhood(emb, targets, allowed, wanted):
    """Brute force: each target in turn takes its most similar allowed row not yet taken."""
    emb = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    targets = targets / np.linalg.norm(targets, axis=1, keepdims=True)
    free, taken = allowed.copy(), []
    while len(taken) < wanted:
        for t in targets:
            sims = np.where(free, emb @ t, -np.inf)
            best = int(np.argmax(sims))
            taken.append(best)
            free[best] = False
            if len(taken) == wanted:
                break
    return np.sort(taken)


@pytest.mark.parametrize(("options", "targeted"), [
    ({"target_domain": "sketch"}, True),  # a target: targeted
    ({}, False),  # nothing to target
    ({"target_domain": "sketch", "batch": BatchOptions(rule="diverse")}, True),
    ({"target_domain": "sketch", "batch": BatchOptions(class_balanced=True)}, True),
    ({"target_domain": "sketch", "targeted": False}, False),
    ({"target_domain": "sketch", "strategy": "entropy-untargeted"}, False),
    ({"strategy": "entropy-targeted", "target_domain": "sketch"}, True),
])
def test_targeting_is_automatic_unless_asked(pool, tmp_path, options, targeted):
    state = new_state(pool, tmp_path / "run")
    config = SelectConfig(**{"budget": 4, "strategy": "entropy", "neighbourhood": 2.5,
                             **options})
    result = select_round(pool, state, config, progress=False)
    assert state.rounds[-1]["targeted"] is targeted
    scored = pd.read_parquet(result.paths["scores"])["sample_id"]
    train = (pool.items["split"] == "train").to_numpy()
    assert set(result.queue["sample_id"]) <= set(scored)
    if not targeted:  # every train item is a candidate
        assert set(scored) == set(pool.items["sample_id"][train])
        return
    # targeted: the 2.5 x 4 = 10 train items nearest to the sketch val points, taken round
    # robin in the run's seeded order of the target points
    rng = np.random.default_rng([config.seed, 0])
    rng.integers(2**31)
    order = rng.permutation(pool.indices(domain="sketch", split="val"))
    emb = pool.image_embeddings().numpy()
    expected = round_robin_neighbourhood(emb, emb[order], train, 10)
    assert sorted(scored) == sorted(pool.items["sample_id"].to_numpy()[expected])


def test_targeted_scores_decide_the_queue(pool, tmp_path, monkeypatch):
    """Reversed scores give another queue: the scores choose among the neighbourhood."""
    config = SelectConfig(budget=6, strategy="entropy", target_domain="sketch")
    first = select_round(pool, new_state(pool, tmp_path / "a"), config, progress=False)
    real = Strategy.score
    monkeypatch.setattr(Strategy, "score", lambda self, *a: -real(self, *a))
    reversed_ = select_round(pool, new_state(pool, tmp_path / "b"), config, progress=False)
    assert not set(first.queue["sample_id"]) & set(reversed_.queue["sample_id"])
    scores = pd.read_parquet(first.paths["scores"]).set_index("sample_id")["score"]
    assert len(scores) == 60  # neighbourhood 10 x budget
    assert scores[first.queue["sample_id"]].min() >= scores.nlargest(6).min()


def test_diverse_batch_is_one_item_per_cluster_of_the_best_candidates(pool, tmp_path):
    cfg = SelectConfig(budget=6, strategy="margin", seed=4,
                       batch=BatchOptions(rule="diverse", prefilter=3))
    result = select_round(pool, new_state(pool, tmp_path / "a"), cfg, progress=False)
    again = select_round(pool, new_state(pool, tmp_path / "b"), cfg, progress=False)
    assert result.queue["sample_id"].tolist() == again.queue["sample_id"].tolist()
    scores = pd.read_parquet(result.paths["scores"]).sort_values("score", ascending=False,
                                                                 kind="stable")
    shortlist = scores["sample_id"].head(18).tolist()  # 3 x budget
    assert set(result.queue["sample_id"]) <= set(shortlist)
    assert result.queue["sample_id"].tolist() != shortlist[:6]  # not simply the top-k
    with pytest.raises(ValueError, match="BatchOptions.rule must be one of 'topk', 'stochastic'"):
        BatchOptions(rule="magic")


def test_interrupted_round_leaves_state_and_is_reproduced(pool, posterior, tmp_path,
                                                          monkeypatch):
    config = SelectConfig(budget=5, strategy="bald", n_draws=10)
    clean = queued_ids(select_round(pool, new_state(pool, tmp_path / "clean"), config,
                                    posterior=posterior, progress=False))
    state = new_state(pool, tmp_path / "crash")

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed while writing the queue")

    monkeypatch.setattr(select_module, "write_queue", crash)
    with pytest.raises(KeyboardInterrupt):
        select_round(pool, state, config, posterior=posterior, progress=False)
    monkeypatch.undo()
    resumed = RunState.load(state.path)
    assert resumed.round == 0 and resumed.queued == {}
    again = select_round(pool, resumed, config, posterior=posterior, progress=False)
    assert queued_ids(again) == clean


def test_bad_configs_name_the_problem(pool, tmp_path):
    state = new_state(pool, tmp_path / "run")
    with pytest.raises(ValueError, match="'epig' needs a posterior"):
        select_round(pool, state, SelectConfig(strategy="epig"), progress=False)
    with pytest.raises(ValueError, match="contradicts targeted=False"):
        SelectConfig(strategy="epig-targeted", targeted=False).resolve(True)
    with pytest.raises(ValueError, match="SelectConfig.budget must be an integer >= 1, got 0"):
        SelectConfig(budget=0)
    with pytest.raises(ValueError, match="unknown strategy 'best'"):
        select_round(pool, state, SelectConfig(strategy="best"), progress=False)
    with pytest.raises(ValueError, match="domain='moon'"):
        select_round(pool, state, SelectConfig(strategy="entropy", target_domain="moon",
                                               targeted=True), progress=False)
    with pytest.raises(ValueError, match="vilu"):
        select_round(pool, state, SelectConfig(strategy="vilu"), progress=False)


def test_epig_without_a_target_domain_targets_the_pools_val_split(pool, posterior, tmp_path):
    state = new_state(pool, tmp_path / "run")
    config = SelectConfig(budget=3, strategy="epig", n_draws=5, n_targets=1000)
    result = select_round(pool, state, config, posterior=posterior, progress=False)
    assert state.rounds[-1]["targeted"] is False  # no target domain: pool scoring
    problem = {}
    real = select_module.SelectionProblem

    def spy(*args, **kwargs):
        problem["p"] = real(*args, **kwargs)
        return problem["p"]

    again = new_state(pool, tmp_path / "again")
    select_module.SelectionProblem, saved = spy, real
    try:
        select_round(pool, again, config, posterior=posterior, progress=False)
    finally:
        select_module.SelectionProblem = saved
    np.testing.assert_array_equal(problem["p"].target_rows, pool.indices(split="val"))
    assert len(result.queue) == 3


def test_cli_select_label_import_status_and_resume(pool, tmp_path):
    run = tmp_path / "run"
    args = ["select", "--pool", str(pool.path), "--run", str(run), "--budget", "6",
            "--strategy", "epig", "--target", "sketch", "--draws", "10", "--no-progress"]
    out = runner.invoke(app, args)
    assert out.exit_code == 0, out.output
    assert "queued 6 items" in out.output
    assert (run / "posterior" / "posterior.json").exists()  # fitted once, cached in the run
    queue = pd.read_csv(run / "round_000" / "queue.csv")

    # a labeller answers 4, skips 1 (Label Studio) and leaves 1 pending
    truth = pool.items.set_index("sample_id")["label"]
    tasks = json.loads((run / "round_000" / "queue.labelstudio.json").read_text())
    export = []
    for i, task in enumerate(tasks[:5]):
        sid = task["data"]["sample_id"]
        result = [] if i == 4 else [{"type": "choices", "value": {
            "choices": [pool.classnames[truth[sid]]]}}]
        export.append({"data": task["data"], "annotations": [
            {"was_cancelled": i == 4, "result": result}]})
    export_file = tmp_path / "export.json"
    export_file.write_text(json.dumps(export))
    out = runner.invoke(app, ["labels", "import", str(export_file), "--run", str(run)])
    assert out.exit_code == 0, out.output
    assert "4 new" in out.output and "1 skipped" in out.output
    again = runner.invoke(app, ["labels", "import", str(export_file), "--run", str(run)])
    assert "0 new, 4 unchanged" in again.output

    state = RunState.load(run)
    assert {sid: y for sid, y in state.labels.items()} == {
        sid: int(truth[sid]) for sid in queue["sample_id"][:4]}
    status = runner.invoke(app, ["status", "--run", str(run)])
    assert status.exit_code == 0 and "labels: 4" in status.output

    out = runner.invoke(app, args)  # one item still pending: refused before any work
    text = " ".join(out.output.split())  # rich wraps lines
    assert out.exit_code == 1 and "1 item(s) queued in round(s) 0 still await" in text
    assert "--force" in text and not (run / "round_001").exists()
    out = runner.invoke(app, [*args, "--force"])  # resumed run: round 1, nothing queued twice
    assert out.exit_code == 0, out.output
    second = pd.read_csv(run / "round_001" / "queue.csv")
    assert not set(second["sample_id"]) & set(queue["sample_id"])
    assert RunState.load(run).round == 2

    bad = tmp_path / "bad.csv"
    bad.write_text(f"sample_id,label\n{queue['sample_id'][5]},unicorn\n")
    out = runner.invoke(app, ["labels", "import", str(bad), "--run", str(run)])
    assert out.exit_code == 1 and "unicorn" in out.output and "Traceback" not in out.output


def test_greedy_rule_picks_within_the_prefiltered_best(pool, posterior, tmp_path):
    config = SelectConfig(budget=5, strategy="epig", target_domain="sketch", n_draws=10,
                          batch=BatchOptions(rule="greedy", prefilter=2))
    result = select_round(pool, new_state(pool, tmp_path / "a"), config, posterior=posterior,
                          progress=False)
    again = select_round(pool, new_state(pool, tmp_path / "b"), config, posterior=posterior,
                         progress=False)
    assert result.queue["sample_id"].tolist() == again.queue["sample_id"].tolist()
    scores = pd.read_parquet(result.paths["scores"]).set_index("sample_id")["score"]
    shortlist = scores.sort_values(ascending=False, kind="stable").index[:10]
    assert len(result.queue) == 5 and set(result.queue["sample_id"]) <= set(shortlist)


@pytest.mark.parametrize("strategy", ["typiclust", "probcover"])
def test_coverage_strategies_cover_what_the_labels_do_not(pool, tmp_path, strategy):
    """Through select_round, a coverage strategy equals its function on the embeddings of the
    candidates and the already queued rows (which count as covered)."""
    state = new_state(pool, tmp_path / "run")
    config = SelectConfig(budget=4, strategy=strategy, seed=2)
    first = select_round(pool, state, config, progress=False)
    second = select_round(pool, state, config, progress=False)
    ids = pool.items["sample_id"].to_numpy()
    queued = np.flatnonzero(np.isin(ids, first.queue["sample_id"]))
    train = pool.indices(split="train")
    rows = np.union1d(train, queued)
    labelled = np.isin(rows, queued)
    emb = pool.image_embeddings(rows).numpy()
    rng = np.random.default_rng([config.seed, 1])
    seed = int(rng.integers(2**31))
    options = {"n_classes": len(pool.classnames)} if strategy == "probcover" else {}
    fn = probcover if strategy == "probcover" else typiclust
    expected = rows[fn(emb, 4, labelled=labelled, seed=seed, **options)]
    assert second.queue["sample_id"].tolist() == ids[expected].tolist()
    assert not set(second.queue["sample_id"]) & set(first.queue["sample_id"])


def test_batch_rules_refuse_what_they_cannot_do():
    with pytest.raises(ValueError, match="needs strategy epig or bald, not 'entropy'"):
        SelectConfig(strategy="entropy", batch=BatchOptions(rule="greedy"))
    with pytest.raises(ValueError, match="'typiclust' is its own batch rule"):
        make_strategy("typiclust", has_target=False, batch=BatchOptions(rule="diverse"))
    with pytest.raises(ValueError, match="class balance and dedup walk a score order"):
        make_strategy("epig", has_target=True,
                      batch=BatchOptions(rule="greedy", class_balanced=True))
