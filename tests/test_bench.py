"""Benchmark grids: rows of the results table, resuming, curves and the summary statistics."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from activevlm.bench import load_grid_config, plot_results, run_grid, summary_table
from activevlm.cli.main import app
from activevlm.loop import LoopConfig
from activevlm.pool import open_pool
from tests.toy import toy_pool

CONFIGS = Path(__file__).resolve().parents[1] / "benchmarks" / "configs"


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    pool = toy_pool(root, domains=("photo", "sketch"), per=10)
    balanced = {"name": "entropy-balanced", "strategy": "entropy",
                "select": {"batch": {"class_balanced": True}}}
    cfg = {"name": "toy", "seeds": [0, 1], "strategies": ["random-untargeted", "entropy", balanced],
           "loop": {"rounds": 2, "select": {"budget": 5}, "finetune": {"max_epochs": 5}},
           "datasets": [{"name": "toy", "pool": str(pool.path), "targets": ["sketch"]}]}
    path = root / "toy.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = root / "out"
    return path, out, run_grid(path, out, progress=False, log=lambda *a: None)


def test_grid_writes_one_row_per_cell_and_round(grid):
    _, _, results = grid
    df = pd.read_parquet(results)
    assert len(df) == 3 * 2 * 3  # strategies x seeds x (round 0 + 2 rounds)
    assert not df.duplicated(["strategy", "seed", "round"]).any()
    assert set(df["dataset"]) == {"toy"} and set(df["target"]) == {"sketch"}
    assert sorted(df["n_labels"].unique()) == [0, 5, 10]
    for col in ("accuracy", "nll", "ece", "bayes_accuracy", "bayes_nll", "bayes_ece",
                "seconds", "targeted"):
        assert col in df and df[col].notna().all()
    # round 0 is the same zero-shot model in every cell
    assert df.loc[df["round"] == 0, "accuracy"].nunique() == 1


def test_a_named_variant_runs_its_own_select_options(grid):
    _, out, results = grid
    df = pd.read_parquet(results)
    assert set(df["strategy"]) == {"random-untargeted", "entropy", "entropy-balanced"}
    cells = out / "runs" / "toy" / "sketch"
    for name, balanced in (("entropy", False), ("entropy-balanced", True)):
        loop = json.loads((cells / name / "seed0" / "loop.json").read_text())
        assert loop["config"]["select"]["strategy"] == "entropy"
        assert loop["config"]["select"]["batch"]["class_balanced"] is balanced
        assert loop["config"]["finetune"]["max_epochs"] == 5  # the loop's options still apply


def test_rounds_record_what_their_batch_held(grid):
    _, out, results = grid
    df = pd.read_parquet(results)
    pool = open_pool(json.loads((out / "runs/toy/sketch/random-untargeted/seed0/state.json")
                                .read_text())["pool"])
    items = pool.items.set_index("sample_id")
    for row in df[df["round"] > 0].itertuples():
        cell = out / "runs" / "toy" / "sketch" / row.strategy / f"seed{row.seed}"
        queued = items.loc[pd.read_parquet(cell / f"round_{row.round - 1:03d}" /
                                           "queue.parquet")["sample_id"]]
        assert row.target_share == pytest.approx((queued["domain"] == "sketch").mean())
        emb = pool.image_embeddings(np.flatnonzero(pool.items["sample_id"].isin(
            queued.index))).numpy()
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        pairs = [emb[i] @ emb[j] for i in range(len(emb)) for j in range(i + 1, len(emb))]
        assert row.batch_similarity == pytest.approx(np.mean(pairs), abs=1e-5)
        assert row.n_classes_new == queued["label"].nunique()
    assert df.loc[df["round"] == 0, "target_share"].isna().all()


def test_rerun_resumes_without_redoing_cells(grid):
    path, out, results = grid
    before = pd.read_parquet(results)
    metric_files = sorted(out.glob("runs/**/metrics.jsonl"))
    stamps = [p.stat().st_mtime_ns for p in metric_files]
    again = pd.read_parquet(run_grid(path, out, progress=False, log=lambda *a: None))
    pd.testing.assert_frame_equal(before, again)
    assert [p.stat().st_mtime_ns for p in metric_files] == stamps


def test_summary_matches_pandas_and_plots_are_written(grid, tmp_path):
    _, _, results = grid
    df = pd.read_parquet(results)
    table = summary_table(df, "accuracy")
    ref = df.groupby(["strategy", "n_labels"])["accuracy"].agg(["mean", "std", "count"])
    for row in table.itertuples():
        r = ref.loc[(row.strategy, row.n_labels)]
        assert row.mean == pytest.approx(r["mean"], abs=1e-12)
        assert row.se == pytest.approx(r["std"] / np.sqrt(r["count"]), abs=1e-12)
        assert row.n_seeds == 2
    # paired difference to random-untargeted: mean over seeds of acc(s, seed) - acc(random, seed)
    wide = df.pivot_table(index=["n_labels", "seed"], columns="strategy", values="accuracy")
    diff = (wide["entropy"] - wide["random-untargeted"]).groupby("n_labels")
    ent = table[table["strategy"] == "entropy"].set_index("n_labels")
    np.testing.assert_allclose(ent["diff_mean"], diff.mean(), atol=1e-12)
    np.testing.assert_allclose(ent["diff_se"], diff.std() / np.sqrt(2), atol=1e-12)

    paths = plot_results(results, tmp_path / "plots")
    for key in ("accuracy_toy_sketch", "ece_toy_sketch"):
        assert paths[key].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = paths["summary"].read_text()
    r = table[(table["strategy"] == "entropy") & (table["n_labels"] == 10)].iloc[0]
    assert f"{r['mean']:.3f} ± {r['se']:.3f}" in md
    assert "| strategy | 0 | 5 | 10 |" in md


def test_cli_runs_the_chosen_seeds_and_strategies(grid, tmp_path):
    path, out, results = grid
    copy = tmp_path / "out"
    shutil.copytree(out, copy)  # the cells exist: the grid resumes them without rerunning
    res = CliRunner().invoke(app, ["bench", str(path), "--out", str(copy), "--seeds", "1",
                                   "--strategies", "entropy-balanced,random-untargeted",
                                   "--no-progress"])
    assert res.exit_code == 0, res.output
    df = pd.read_parquet(copy / "results.parquet")
    assert set(df["strategy"]) == {"entropy-balanced", "random-untargeted"}
    assert set(df["seed"]) == {1}
    full = pd.read_parquet(results).set_index(["strategy", "seed", "round"])
    sub = df.set_index(["strategy", "seed", "round"])
    pd.testing.assert_series_equal(sub["accuracy"], full.loc[sub.index, "accuracy"])
    assert (copy / "summary.md").is_file()
    res = CliRunner().invoke(app, ["bench", str(path), "--out", str(copy), "--strategies",
                                   "epig", "--no-progress"])
    assert res.exit_code == 1 and "not in the config" in res.output


def test_config_errors_name_the_problem(tmp_path):
    base = {"seeds": [0], "strategies": ["random"], "datasets": [{"name": "x", "pool": "demo"}]}
    with pytest.raises(ValueError, match="unknown key"):
        load_grid_config({**base, "seed": 1})
    with pytest.raises(ValueError, match="unknown strategy"):
        load_grid_config({**base, "strategies": ["rnd"]})
    with pytest.raises(ValueError, match="unknown loop.select option"):
        load_grid_config({**base, "strategies": [{"name": "e", "strategy": "epig",
                                                  "select": {"balanced": True}}]})
    with pytest.raises(ValueError, match="mapping with 'name', 'strategy'"):
        load_grid_config({**base, "strategies": [{"strategy": "epig"}]})
    with pytest.raises(ValueError, match="more than once"):
        load_grid_config({**base, "strategies": ["random", {"name": "random",
                                                            "strategy": "entropy"}]})
    with pytest.raises(ValueError, match="environment variable"):
        run_grid({**base, "datasets": [{"name": "x", "pool": "$ACTIVEVLM_NO_SUCH_VAR/p"}]},
                 tmp_path, progress=False)


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_parse(path):
    cfg = load_grid_config(path)
    for ds in cfg["datasets"]:
        LoopConfig.from_dict({**(cfg.get("loop") or {}), **(ds.get("loop") or {})})


def test_plot_reads_loop_output_and_titles_say_what_was_measured(tmp_path):
    from activevlm.bench.plot import _title, load_results
    from activevlm.loop import read_metrics, run_loop

    root = tmp_path / "loop"
    toy = toy_pool(tmp_path / "pool", domains=("photo", "sketch"), per=6)
    config = LoopConfig.from_dict({"rounds": 1, "finetune": {"max_epochs": 2}, "select": {
        "strategy": "random", "budget": 4, "target_domain": "sketch"}})
    for seed in (0, 1):
        run_loop(toy, config, root / f"seed{seed}", seed, progress=False, log=lambda *a: None)
    table = load_results(root)
    expected = pd.concat([read_metrics(root / f"seed{s}") for s in (0, 1)], ignore_index=True)
    pd.testing.assert_frame_equal(table[expected.columns], expected)
    assert set(table["target"]) == {"sketch"} and set(table["split"]) == {"test"}
    assert set(table["dataset"]) == {toy.manifest["dataset"]["name"]}
    assert load_results(root / "seed0" / "metrics.jsonl")["seed"].unique().tolist() == [0]
    title = _title(table, "toy", "sketch")
    n = int(table["n_test"].iloc[0])
    assert title == f"toy, target sketch: test split, n={n}; mean ± se over 2 seeds"

    res = CliRunner().invoke(app, ["plot", str(root)])
    assert res.exit_code == 0, res.output
    import matplotlib.image

    name = f"{toy.manifest['dataset']['name']}_sketch"
    for kind in ("accuracy", "ece"):  # deterministic and Bayesian panels side by side
        assert matplotlib.image.imread(root / f"{kind}_{name}.png").shape[:2] == (480, 1200)

    bad = tmp_path / "results.csv"
    bad.write_text("a,b\n1,2\n")
    res = CliRunner().invoke(app, ["plot", str(bad)])
    assert res.exit_code == 1 and "not benchmark or loop results" in " ".join(res.output.split())
    broken = tmp_path / "broken.parquet"
    broken.write_text("not parquet")
    res = CliRunner().invoke(app, ["plot", str(broken)])
    assert res.exit_code == 1 and "cannot read results" in " ".join(res.output.split())
    assert res.exception is None or isinstance(res.exception, SystemExit)
