"""Simulated loops (resume after a crash, refit modes, ViLU fallback) and the
human-in-the-loop round trip select -> labels import -> finetune -> select through the CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from activevlm.bayes.posterior import BayesVLMPosterior
from activevlm.cli.main import app
from activevlm.loop import LoopConfig, answer_queue, read_metrics, run_loop
from activevlm.loop import simulate as simulate_module
from activevlm.loop.failure import failure_probabilities, msp_failure
from activevlm.models.head import ProjectionHead
from activevlm.runs import RunState
from activevlm.vilu import ViLUConfig
from tests.toy import toy_pool

runner = CliRunner()
TIMINGS = ["select_seconds", "finetune_seconds", "eval_seconds", "seconds"]


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    return toy_pool(tmp_path_factory.mktemp("toy"), domains=("photo", "sketch", "art"), per=10)


def config(strategy: str = "epig", budget: int = 6, select: dict | None = None,
           **overrides) -> LoopConfig:
    raw = {"rounds": 3, "select": {"strategy": strategy, "budget": budget, "target_domain":
                                   "sketch", "n_draws": 8, "n_targets": 16, **(select or {})},
           "finetune": {"max_epochs": 8}, "vilu": {"epochs": 5, "hidden": [16]},
           "vilu_min_labels": 5}
    return LoopConfig.from_dict({**raw, **overrides})


class Crash(RuntimeError):
    pass


def crash_on_call(monkeypatch, name: str, n: int) -> None:
    """Make ``simulate_module.<name>`` raise on its ``n``-th call (1-based)."""
    real, calls = getattr(simulate_module, name), {"n": 0}

    def wrapper(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            raise Crash(f"injected crash in {name}")
        return real(*args, **kwargs)

    monkeypatch.setattr(simulate_module, name, wrapper)


@pytest.mark.parametrize("strategy", ["epig", "vilu+epig"])
def test_killed_loop_resumes_with_identical_rounds(pool, tmp_path, monkeypatch, strategy):
    cfg = config(strategy=strategy)
    full = run_loop(pool, cfg, tmp_path / "full", seed=1, progress=False, log=lambda *a: None)
    assert full["round"].tolist() == [0, 1, 2, 3]
    assert full["n_labels"].tolist() == [0, 6, 12, 18]

    out = tmp_path / "killed"
    # 1st crash: round 2 after its selection and labels, during fine-tuning.
    with monkeypatch.context() as m:
        crash_on_call(m, "adapt_run", 2)
        with pytest.raises(Crash):
            run_loop(pool, cfg, out, seed=1, progress=False, log=lambda *a: None)
    assert read_metrics(out)["round"].tolist() == [0, 1]
    assert RunState.load(out).round == 2  # round 2 was selected, not yet finished
    # 2nd crash: round 3 in the middle of its selection (before the state is saved).
    with monkeypatch.context() as m:
        real = simulate_module.select_round
        calls = {"n": 0}

        def select_then_crash(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == 1:  # resumed round 2 does not select again; this is round 3
                raise Crash("injected crash in select_round")
            return real(*args, **kwargs)

        m.setattr(simulate_module, "select_round", select_then_crash)
        with pytest.raises(Crash):
            run_loop(pool, cfg, out, seed=1, progress=False, log=lambda *a: None)
    assert read_metrics(out)["round"].tolist() == [0, 1, 2]
    resumed = run_loop(pool, cfg, out, seed=1, progress=False, log=lambda *a: None)

    pd.testing.assert_frame_equal(full.drop(columns=TIMINGS), resumed.drop(columns=TIMINGS))
    a, b = RunState.load(tmp_path / "full"), RunState.load(out)
    assert a.labels == b.labels and len(b.labels) == 18 and not b.queued
    assert len(b.rounds) == 3
    # the labels are the dataset's (simulated oracle through the label import)
    truth = dict(zip(pool.items["sample_id"], pool.items["label"], strict=True))
    assert all(truth[sid] == y for sid, y in b.labels.items())
    # a finished loop is not rerun; more rounds continue it
    again = run_loop(pool, cfg, out, seed=1, progress=False, log=lambda *a: None)
    pd.testing.assert_frame_equal(again, resumed)


def test_resume_refuses_other_settings(pool, tmp_path):
    run_loop(pool, config(rounds=0), tmp_path / "run", seed=0, progress=False,
             log=lambda *a: None)
    with pytest.raises(ValueError, match=r"\[.select.budget.\]"):
        run_loop(pool, config(rounds=0, budget=7), tmp_path / "run", seed=0, progress=False)
    with pytest.raises(ValueError, match="seed"):
        run_loop(pool, config(rounds=0), tmp_path / "run", seed=1, progress=False)


def test_resume_accepts_a_run_made_before_an_option_existed(pool, tmp_path):
    run = tmp_path / "run"
    run_loop(pool, config(rounds=0), run, seed=0, progress=False, log=lambda *a: None)
    record = json.loads((run / "loop.json").read_text())
    del record["config"]["select"]["batch"]["balance_within"]  # as an older version wrote
    (run / "loop.json").write_text(json.dumps(record))
    run_loop(pool, config(rounds=0), run, seed=0, progress=False, log=lambda *a: None)
    with pytest.raises(ValueError, match="select.batch.balance_within"):  # non-default: a change
        run_loop(pool, config(rounds=0, select={"batch": {"balance_within": 2.0}}), run,
                 seed=0, progress=False)


def stacked(weight, bias):
    return weight if bias is None else torch.cat([weight, bias[:, None]], 1)


@pytest.mark.parametrize("mode", ["none", "recentre", "recentre+update"])
def test_refit_mode_is_respected(pool, tmp_path, mode):
    cfg = config(strategy="entropy", rounds=1, refit={"mode": mode})
    run_loop(pool, cfg, tmp_path / "run", seed=0, progress=False, log=lambda *a: None)
    base = BayesVLMPosterior.load(tmp_path / "run" / "posterior_base")
    post = BayesVLMPosterior.load(tmp_path / "run" / "posterior")
    head = ProjectionHead.load(tmp_path / "run" / "head")
    assert not torch.equal(head.image_weight, pool.head.image_weight)  # it was fine-tuned
    new_w = stacked(head.image_weight, head.image_bias)
    if mode == "none":
        torch.testing.assert_close(post.image.W_map, base.image.W_map, rtol=0, atol=0)
    else:
        torch.testing.assert_close(post.image.W_map, new_w.to(post.image.W_map), rtol=0, atol=0)
    if mode == "recentre+update":
        assert not torch.allclose(post.image.A, base.image.A)
        assert post.data_description["refits"][-1]["mode"] == mode
    else:
        torch.testing.assert_close(post.image.A, base.image.A, rtol=0, atol=0)


def test_unknown_refit_mode_is_an_error():
    with pytest.raises(ValueError, match="mode"):
        config(refit={"mode": "recenter"})
    with pytest.raises(ValueError, match="unknown strategy"):
        config(strategy="epig-targetted")


def test_failure_probabilities_fall_back_to_msp_then_use_vilu(pool):
    head = pool.head
    rows = pool.indices(split="train")
    labels = pool.items["label"].to_numpy()[rows]
    vcfg = ViLUConfig(epochs=3, hidden=(8,))
    p, source = failure_probabilities(pool, head, rows[:4], labels[:4], vcfg, min_labels=5,
                                      device="cpu")
    assert source == "msp"
    g = pool.image_embeddings()
    probs = torch.softmax(head.logits(g, pool.text_embeddings()), -1).double().numpy()
    np.testing.assert_allclose(p, 1 - probs.max(1), atol=1e-6)
    np.testing.assert_allclose(msp_failure(pool, head), p, atol=0)
    p, source = failure_probabilities(pool, head, rows, labels, vcfg, min_labels=5,
                                      device="cpu")
    assert source == "vilu" and p.shape == (len(pool.items),)
    assert ((p >= 0) & (p <= 1)).all() and p.std() > 0


def test_human_in_the_loop_round_trip_through_the_cli(pool, tmp_path):
    run = tmp_path / "run"
    # 24 labels: with 12, whether fine-tuning beats the zero-shot head on the sketch val
    # split depends on which items BALD's 8 draws pick (measured: not at seed 0, at seeds 1-2;
    # with 24 at all three), and the rounds below need a head that moved
    first = runner.invoke(app, ["select", "--pool", str(pool.path), "--run", str(run),
                                "--strategy", "bald", "--budget", "24", "--draws", "8",
                                "--no-progress"])
    assert first.exit_code == 0, first.output
    q1 = pd.read_parquet(run / "round_000" / "queue.parquet")
    truth = pool.items.set_index("sample_id")["label"]
    answers = pd.DataFrame({"sample_id": q1["sample_id"],
                            "label": [pool.classnames[truth[s]] for s in q1["sample_id"]]})
    answers.to_csv(tmp_path / "answers.csv", index=False)
    imp = runner.invoke(app, ["labels", "import", str(tmp_path / "answers.csv"), "--run",
                              str(run)])
    assert imp.exit_code == 0, imp.output
    ft = runner.invoke(app, ["finetune", "--run", str(run), "--val-domain", "sketch",
                             "--val-split", "val", "--epochs", "10", "--no-progress"])
    assert ft.exit_code == 0, ft.output
    head = ProjectionHead.load(run / "head")
    assert not torch.equal(head.image_weight, pool.head.image_weight)
    post = BayesVLMPosterior.load(run / "posterior")
    torch.testing.assert_close(post.image.W_map, stacked(head.image_weight, head.image_bias)
                               .to(post.image.W_map), rtol=0, atol=0)
    assert (run / "posterior_base" / "posterior.json").exists()

    for strategy, round_dir in (("entropy", "round_001"), ("bald", "round_002")):
        again = runner.invoke(app, ["select", "--pool", str(pool.path), "--run", str(run),
                                    "--strategy", strategy, "--budget", "6", "--draws", "8",
                                    "--no-progress", "--force"])  # round 1 stays unlabelled
        assert again.exit_code == 0, again.output
        assert "fine-tuned head" in again.output
        q = pd.read_parquet(run / round_dir / "queue.parquet")
        rows = pool.items.reset_index().set_index("sample_id").loc[q["sample_id"], "index"]
        g = head.image_embeddings(torch.from_numpy(pool.image_activations[rows.to_numpy()]))
        h = head.text_embeddings(torch.from_numpy(pool.text_activations))
        probs = torch.softmax(head.logits(g, h), -1).numpy()
        # the queue's predictions come from the fine-tuned head, not the pool's
        np.testing.assert_allclose(q["predicted_prob"], probs.max(1), atol=1e-5)
        zs = torch.softmax(pool.head.logits(pool.image_embeddings(rows.to_numpy()),
                                            pool.text_embeddings()), -1).numpy()
        assert np.abs(zs.max(1) - probs.max(1)).max() > 1e-4
    state = RunState.load(run)
    q2 = pd.read_parquet(run / "round_001" / "queue.parquet")
    q3 = pd.read_parquet(run / "round_002" / "queue.parquet")
    all_ids = list(q1["sample_id"]) + list(q2["sample_id"]) + list(q3["sample_id"])
    assert len(set(all_ids)) == len(all_ids) == 36  # queued items never repeat
    assert set(state.labels) == set(q1["sample_id"])
    assert set(state.queued) == set(q2["sample_id"]) | set(q3["sample_id"])


def test_loop_cli_runs_two_seeds(pool, tmp_path):
    res = runner.invoke(app, ["loop", "--pool", str(pool.path), "--strategy",
                              "entropy-targeted", "--rounds", "1", "--budget", "5", "--seeds",
                              "0,1", "--target", "sketch", "--run", str(tmp_path / "loop"),
                              "--epochs", "3", "--no-progress"])
    assert res.exit_code == 0, res.output
    for seed in (0, 1):
        m = read_metrics(tmp_path / "loop" / f"seed{seed}")
        assert m["n_labels"].tolist() == [0, 5] and bool(m["targeted"].all())


@pytest.mark.parametrize("strategy", ["epig", "entropy", "random-untargeted"])
def test_loop_and_select_make_the_same_selection(pool, tmp_path, strategy):
    """`loop --strategy S` and `select --strategy S` resolve the name, the targeting and the
    seed identically: the same queue from the same state (a fresh run) and seed."""
    common = ["--pool", str(pool.path), "--strategy", strategy, "--budget", "6", "--target",
              "sketch", "--draws", "8", "--n-targets", "16", "--no-progress"]
    loop = runner.invoke(app, ["loop", *common, "--rounds", "1", "--seeds", "3", "--run",
                               str(tmp_path / "loop"), "--epochs", "2"])
    assert loop.exit_code == 0, loop.output
    run = tmp_path / "loop" / "seed3"
    select = runner.invoke(app, ["select", *common, "--seed", "3", "--run",
                                 str(tmp_path / "select"), "--posterior",
                                 str(run / "posterior_base")])
    assert select.exit_code == 0, select.output
    by_loop = pd.read_parquet(run / "round_000" / "queue.parquet")
    by_select = pd.read_parquet(tmp_path / "select" / "round_000" / "queue.parquet")
    pd.testing.assert_frame_equal(by_loop, by_select)
    targeted = RunState.load(run).rounds[0]["targeted"]
    assert targeted is (strategy != "random-untargeted")
    assert RunState.load(tmp_path / "select").rounds[0]["targeted"] is targeted


def test_failure_probabilities_use_msp_with_a_single_wrong_prediction(pool):
    """ViLU holds out one right and one wrong item: with only one wrong label the loop must
    fall back to MSP instead of failing (a well fine-tuned head reaches this)."""
    head = pool.head
    rows = pool.indices(split="train")
    g = pool.image_embeddings()[rows]
    labels = head.logits(g, pool.text_embeddings()).argmax(-1).numpy().copy()
    labels[0] = (labels[0] + 1) % len(pool.classnames)  # the only wrong prediction
    p, source = failure_probabilities(pool, head, rows, labels, ViLUConfig(epochs=3, hidden=(8,)),
                                      min_labels=5, device="cpu")
    assert source == "msp"
    np.testing.assert_allclose(p, msp_failure(pool, head), atol=0)


def test_oracle_skips_items_without_a_dataset_label(tmp_path):
    from types import SimpleNamespace

    from activevlm.runs import RunState

    items = pd.DataFrame({"sample_id": ["a", "b", "c"], "label": [1, -1, 0]})
    pool = SimpleNamespace(items=items, classnames=["cat", "dog"])
    state = RunState.create(tmp_path / "run", "p", "m", ["cat", "dog"])
    state.queued.update({"a": 0, "b": 0, "c": 0})
    report = answer_queue(pool, state, 0)
    assert state.labels == {"a": 1, "c": 0} and report.skipped == ["b"]
    assert state.ignored == ["b"] and state.queued == {}


def test_realistic_loop_calibrates_the_posterior_on_its_own_labels(pool, tmp_path):
    """No labelled target val (early stopping on acquired labels); from 10 labels on (2 per
    fold) the refitted posterior is tempered by the cross-fitted τ, recorded per round."""
    cfg = config(strategy="entropy", rounds=2, val_split=None)
    rows = run_loop(pool, cfg, tmp_path / "run", seed=0, progress=False, log=lambda *a: None)
    assert np.isnan(rows.loc[1, "calibration_tau"])  # 6 labels: too few for 5 folds
    tau = rows.loc[2, "calibration_tau"]
    base = BayesVLMPosterior.load(tmp_path / "run" / "posterior_base")
    post = BayesVLMPosterior.load(tmp_path / "run" / "posterior")
    assert post.data_description["calibration"]["tau"] == tau
    assert post.data_description["calibration"]["n_labels"] == 12
    for side in ("image", "text"):
        assert getattr(post, side).pseudo_count == pytest.approx(
            getattr(base, side).pseudo_count / tau)
    assert (rows.loc[1:, "cv_median"] > 0).all()

    plain = config(strategy="entropy", rounds=2, val_split=None, refit={"calibrate": False})
    run_loop(pool, plain, tmp_path / "plain", seed=0, progress=False, log=lambda *a: None)
    post = BayesVLMPosterior.load(tmp_path / "plain" / "posterior")
    assert "calibration" not in post.data_description
    assert post.image.pseudo_count == base.image.pseudo_count
