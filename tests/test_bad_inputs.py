"""A corpus of bad inputs through the command line: each exits non-zero with one paragraph
that names the culprit, no traceback, and not one byte of existing run or pool data changed
(nor any new file or folder made)."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from activevlm.bayes.from_pool import fit_pool_posterior
from activevlm.cli.main import app
from activevlm.runs import RunState, import_labels
from activevlm.runs.select import SelectConfig, select_round
from tests.procs import tree_digest
from tests.toy import CONFIGS, toy_pool

runner = CliRunner()
# what a library's exception looks like when quoted: "SafetensorError: ...", "[Errno 28]"
LIBRARY_TEXT = re.compile(r"\b[A-Z]\w*(Error|Exception)\b(?<!ActiveVLMError)|\[Errno")
TINY = str(CONFIGS / "tiny-clip.json")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return build_world(tmp_path_factory.mktemp("world"))


def build_world(root: Path):
    """A toy pool, its posterior, and a run with one round queued and three labels, in
    ``root``; returns ``(root, pool)``."""
    pool = toy_pool(root, domains=("photo", "sketch", "art"), per=10)
    fit_pool_posterior(pool, split="train", progress=False).save(root / "posterior")
    state = RunState.create(root / "run", str(pool.path), pool.model_id, pool.classnames,
                            pool_checksum=pool.sample_id_checksum)
    result = select_round(pool, state, SelectConfig(budget=6, strategy="random"),
                          progress=False)
    ids = result.queue["sample_id"][:3]
    labels = pool.items.set_index("sample_id").loc[ids, "label"]
    pd.DataFrame({"sample_id": ids, "label": [pool.classnames[y] for y in labels]}).to_csv(
        root / "labels.csv", index=False)
    import_labels(state, root / "labels.csv", set(pool.items["sample_id"]))
    return root, pool


@dataclass
class Env:
    """One case's copies: ``run``, ``posterior`` and (on request) ``pool``."""

    tmp: Path
    pool: Path
    run: Path
    post: Path
    queued: str  # a sample id queued in round 0 and not labelled
    origin: Path

    def write(self, name: str, content: str | bytes) -> Path:
        path = self.tmp / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        return path

    def ls_export(self, tasks) -> Path:
        return self.write("export.json", json.dumps(tasks))

    def state(self, mutate) -> None:
        file = self.run / "state.json"
        raw = json.loads(file.read_text())
        mutate(raw)
        file.write_text(json.dumps(raw))

    def own_pool(self) -> Path:
        """A private copy of the pool (for cases that damage it); the run points to it."""
        copy = self.tmp / "pool"
        if copy.exists():
            return copy
        shutil.copytree(self.origin / "pool", copy)
        self.state(lambda s: s.update(pool=str(copy)))
        self.pool = copy
        return copy

    def select(self, *extra: str) -> list[str]:
        return ["select", "--pool", str(self.pool), "--run", str(self.tmp / "newrun"),
                "--strategy", "entropy", "--budget", "3", "--no-progress", *extra]

    def loop(self, *extra: str) -> list[str]:
        return ["loop", "--pool", str(self.pool), "--run", str(self.tmp / "loop"),
                "--rounds", "1", "--budget", "3", "--target", "sketch", "--no-progress",
                *extra]

    def manifest(self, text: str) -> str:
        return f"manifest:{self.write('data.csv', text)}"


def task(sid, value=None, **over) -> dict:
    value = {"choices": ["cat"]} if value is None else value
    t = {"data": {"sample_id": sid}, "annotations": [{"result": [{"value": value}]}]}
    t.update(over)
    return t


def shard(env: Env) -> Path:
    return env.own_pool() / "shards" / "image_act-00000.npy"


def nan_shard(env: Env) -> None:
    arr = np.load(shard(env))
    arr[7, 3] = np.nan
    np.save(shard(env), arr)


def posterior_json(env: Env, mutate) -> None:
    meta = json.loads((env.post / "posterior.json").read_text())
    mutate(meta)
    (env.post / "posterior.json").write_text(json.dumps(meta))


def nan_posterior(env: Env) -> None:
    from safetensors.torch import load_file, save_file

    t = load_file(env.post / "posterior.safetensors")
    t["image.A"][0, 0] = float("inf")
    save_file(t, env.post / "posterior.safetensors")


def checkpoint(env: Env, obj) -> str:
    torch.save(obj, env.tmp / "weights.pt")
    return str(env.tmp / "weights.pt")


class Payload:
    def __reduce__(self):
        return (print, ("pickled code ran",))


def image_manifest(env: Env) -> str:
    paths = sorted(Path(env.origin / "images").rglob("*.png"))[:2]  # two toy-world images
    return env.manifest("path,label\n" + "".join(f"{p},cat\n" for p in paths))


def last(*values):
    """The last value (the earlier ones are side effects that damage a file)."""
    return values[-1]


def replace_in(path: Path, old: str, new: str) -> None:
    path.write_text(path.read_text().replace(old, new))


def _imp(env: Env, file: Path) -> list[str]:
    return ["labels", "import", str(file), "--run", str(env.run)]


def other_queued(env: Env) -> str:
    return sorted(RunState.load(env.run).queued)[-1]


def run_head(env: Env, embed: int = 32, image: int = 64, text: int = 64) -> None:
    """A fine-tuned head in the run with the given sizes (the toy pool's are 32, 64, 64)."""
    from activevlm.models.head import ProjectionHead

    ProjectionHead(torch.zeros(embed, image), torch.zeros(embed, text), 10.0).save(
        env.run / "head")


def deep_json(levels: int = 200_000) -> str:
    return "[" * levels + "]" * levels


def model_config(env: Env, **changes) -> str:
    cfg = json.loads(Path(TINY).read_text())
    for key, value in changes.items():
        tower, _, field = key.rpartition("__")
        (cfg[tower] if tower else cfg)[field] = value
    # a name of its own per case: configs register by name, once per process
    path = env.tmp / "cfgs" / f"tiny-typed-{'-'.join(changes).replace('_', '')}.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(cfg))
    return str(path)


def embed_with(env: Env, **changes) -> list[str]:
    """``embed`` of two toy images with the tiny config changed by ``changes``."""
    return ["embed", "--data", image_manifest(env), "--model-config",
            model_config(env, **changes), "--out", str(env.tmp / "np")]


def manifest_field(env: Env, mutate) -> None:
    file = env.own_pool() / "manifest.json"
    m = json.loads(file.read_text())
    mutate(m)
    file.write_text(json.dumps(m))


def drop_item_column(env: Env, column: str) -> None:
    file = env.own_pool() / "items.parquet"
    pd.read_parquet(file).drop(columns=[column]).to_parquet(file, index=False)


def bench_file(env: Env, config: dict) -> list[str]:
    return ["bench", str(env.write("b.yaml", json.dumps(config))), "--out",
            str(env.tmp / "out")]


BENCH_OK = {"seeds": [0], "strategies": ["random"]}


# (case id, setup(env) -> (args, [strings the message must contain]))
CASES = [
    # label files
    ("csv-empty", lambda e: (_imp(e, e.write("l.csv", "")), ["l.csv", "empty"])),
    ("csv-no-label-column", lambda e: (_imp(e, e.write("l.csv", "sample_id,lab\nx,cat\n")),
                                       ["l.csv", "sample_id,label", "label"])),
    ("csv-unknown-class", lambda e: (_imp(e, e.write("l.csv", f"sample_id,label\n{e.queued},"
                                                    "unicorn\n")), ["l.csv", "unicorn"])),
    ("csv-unknown-id", lambda e: (_imp(e, e.write("l.csv", "sample_id,label\nnope.png,cat\n")),
                                  ["l.csv", "nope.png"])),
    ("csv-duplicate-id", lambda e: (_imp(e, e.write("l.csv", f"sample_id,label\n{e.queued},cat"
                                                   f"\n{e.queued},dog\n")),
                                    ["l.csv", "no majority", e.queued])),
    ("csv-binary", lambda e: (_imp(e, e.write("l.csv", b"\xff\xfe\x00\x81garbage")),
                              ["l.csv"])),
    ("label-file-txt", lambda e: (_imp(e, e.write("l.txt", "x")), ["l.txt", ".txt"])),
    ("label-file-directory", lambda e: (_imp(e, e.tmp), [str(e.tmp)])),
    ("csv-semicolons", lambda e: (_imp(e, e.write("l.csv", f"sample_id;label\n{e.queued};cat\n")),
                                  ["l.csv", "sample_id,label"])),
    ("csv-skipped-and-label", lambda e: (_imp(e, e.write("l.csv", "sample_id,label,skipped\n"
                                                        f"{e.queued},cat,yes\n")),
                                         ["l.csv", e.queued, "skipped"])),
    ("jsonmin-label-bool", lambda e: (_imp(e, e.ls_export([{"sample_id": e.queued,
                                                            "label": True}])),
                                      ["export.json", "record #0", "true"])),
    ("label-file-missing", lambda e: (_imp(e, e.tmp / "missing.csv"), ["missing.csv"])),
    ("ls-invalid-json", lambda e: (_imp(e, e.write("export.json", "[{")), ["export.json"])),
    ("ls-top-level-object", lambda e: (_imp(e, e.ls_export({"tasks": []})),
                                       ["export.json", "list of tasks"])),
    ("ls-task-string", lambda e: (_imp(e, e.ls_export(["oops"])), ["task #0", "a string"])),
    ("ls-data-string", lambda e: (_imp(e, e.ls_export([task(e.queued, data="x.png")])),
                                  ["task #0", "'data'", "a string"])),
    ("ls-annotations-object", lambda e: (_imp(e, e.ls_export([{"data": {"sample_id": e.queued},
                                                                "annotations": {"r": 1}}])),
                                         ["task #0", "'annotations'", "an object"])),
    ("ls-annotation-string", lambda e: (_imp(e, e.ls_export([{"data": {"sample_id": e.queued},
                                                               "annotations": ["x"]}])),
                                        ["task #0", "annotations[0]"])),
    ("ls-result-object", lambda e: (_imp(e, e.ls_export([{"data": {"sample_id": e.queued},
                                                           "annotations": [{"result": {}}]}])),
                                    ["task #0", "result"])),
    ("ls-value-labels", lambda e: (_imp(e, e.ls_export([task(e.queued, {"labels": ["cat"]})])),
                                   ["task #0", "'choices'", "labels"])),
    ("ls-choices-string", lambda e: (_imp(e, e.ls_export([task(e.queued, {"choices": "cat"})])),
                                     ["task #0", "choices"])),
    ("ls-no-sample-id", lambda e: (_imp(e, e.ls_export([task(None, data={})])),
                                   ["task #0", "sample_id"])),
    # issue 24: silent before (columns shifted, a dict taken as unannotated), now refused
    ("csv-trailing-comma", lambda e: (_imp(e, e.write("l.csv", f"sample_id,label\n{e.queued},"
                                                     f"cat,\n{other_queued(e)},dog,\n")),
                                      ["l.csv", "line 2", "3 fields", "trailing comma"])),
    ("csv-four-fields", lambda e: (_imp(e, e.write("l.csv", f"sample_id,label\n{e.queued},cat"
                                                  "\nx,cat,dog,boat\n")),
                                   ["l.csv", "line 3", "4 fields", "sample_id,label"])),
    ("jsonmin-label-object", lambda e: (_imp(e, e.ls_export([{"sample_id": e.queued,
                                                              "label": {"x": 1}}])),
                                        ["export.json", "record #0", "'label'", '{"x": 1}'])),
    ("jsonmin-label-number-list", lambda e: (_imp(e, e.ls_export([{"sample_id": e.queued,
                                                                   "label": [[1]]}])),
                                             ["export.json", "record #0", "'label'"])),
    ("ls-deep-nesting", lambda e: (_imp(e, e.write("export.json", deep_json())),
                                   ["export.json", "nested too deeply"])),
    # run state
    ("state-label-out-of-range", lambda e: last(
        e.state(lambda s: s["labels"].update({e.queued: 99})),
        (["status", "--run", str(e.run)], ["state.json", "99", e.queued]))),
    ("state-invalid-json", lambda e: last(
        (e.run / "state.json").write_text("{"),
        (["status", "--run", str(e.run)], ["state.json"]))),
    ("state-top-level-list", lambda e: last(
        (e.run / "state.json").write_text("[]"),
        (["status", "--run", str(e.run)], ["state.json", "JSON object"]))),
    ("state-format-version", lambda e: last(
        e.state(lambda s: s.update(format_version=7)),
        (["status", "--run", str(e.run)], ["state.json", "format_version", "7"]))),
    ("state-no-pool", lambda e: last(
        e.state(lambda s: s.pop("pool")),
        (["status", "--run", str(e.run)], ["state.json", "pool"]))),
    ("state-queued-round-text", lambda e: last(
        e.state(lambda s: s["queued"].update({e.queued: "r"})),
        (_imp(e, e.origin / "labels.csv"), ["state.json", "'queued'", e.queued]))),
    ("state-deep-nesting", lambda e: last(
        (e.run / "state.json").write_text(deep_json()),
        (["status", "--run", str(e.run)], ["state.json", "nested too deeply"]))),
    ("status-no-run", lambda e: (["status", "--run", str(e.tmp / "nowhere")],
                                 ["nowhere", "no run"])),
    ("run-pool-moved", lambda e: last(
        e.state(lambda s: s.update(pool=str(e.tmp / "gone"))),
        (_imp(e, e.origin / "labels.csv"), ["gone", "--pool"]))),
    ("repoint-other-pool", lambda e: last(
        e.state(lambda s: s.update(pool_checksum="0" * 16)),
        (_imp(e, e.origin / "labels.csv") + ["--pool", str(e.pool)], ["checksum", "0" * 16]))),
    ("finetune-no-labels", lambda e: last(
        e.state(lambda s: s.update(labels={})),
        (["finetune", "--run", str(e.run), "--no-progress"], ["no labels", str(e.run)]))),
    # posteriors and heads
    ("posterior-missing-key", lambda e: last(
        posterior_json(e, lambda m: m.pop("image")),
        (e.select("--posterior", str(e.post)), ["posterior.json", "image.prior_precision"]))),
    ("posterior-invalid-json", lambda e: last(
        (e.post / "posterior.json").write_text("{"),
        (e.select("--posterior", str(e.post)), ["posterior.json"]))),
    ("posterior-garbage-tensors", lambda e: last(
        (e.post / "posterior.safetensors").write_bytes(b"\xff" * 64),
        (e.select("--posterior", str(e.post)), ["posterior.safetensors"]))),
    ("posterior-missing-file", lambda e: last(
        (e.post / "posterior.safetensors").unlink(),
        (e.select("--posterior", str(e.post)), ["posterior.safetensors", "missing"]))),
    ("posterior-non-finite", lambda e: last(
        nan_posterior(e),
        (e.select("--posterior", str(e.post)), ["image.A", "NaN or inf"]))),
    ("posterior-head-garbage", lambda e: last(
        (e.post / "head.safetensors").write_bytes(b"\x00" * 9),
        (["zeroshot", "--pool", str(e.pool), "--posterior", str(e.post)],
         ["head.safetensors"]))),
    ("run-head-garbage", lambda e: last(
        (e.run / "head.safetensors").write_bytes(b"\x07" * 99),
        (e.run / "head.json").write_text('{"logit_scale": 1}'),
        (["select", "--pool", str(e.pool), "--run", str(e.run), "--strategy", "entropy",
          "--budget", "2", "--force", "--no-progress"], ["head.safetensors"]))),
    ("run-head-embed-dim", lambda e: last(
        run_head(e, embed=10),
        (["select", "--pool", str(e.pool), "--run", str(e.run), "--strategy", "entropy",
          "--budget", "2", "--force", "--no-progress"],
         ["head.safetensors", "to 10-dim", "and 32"]))),
    ("run-head-input-dim", lambda e: last(
        run_head(e, image=50),
        (["select", "--pool", str(e.pool), "--run", str(e.run), "--strategy", "bald",
          "--budget", "2", "--force", "--no-progress"], ["head.safetensors", "50/64"]))),
    ("finetune-device-typo", lambda e: (["finetune", "--run", str(e.run), "--device", "gpu9",
                                         "--no-progress"], ["device", "'gpu9'", "cuda:N"])),
    # pools
    ("pool-items-missing-columns", lambda e: last(
        drop_item_column(e, "domain"),
        (_imp(e, e.origin / "labels.csv"), ["items.parquet", "'domain'"]))),
    ("pool-shard-rows-text", lambda e: last(
        manifest_field(e, lambda m: m["shards"][0].update(rows="many")),
        (_imp(e, e.origin / "labels.csv"), ["manifest.json", "shards[0].rows", "'many'"]))),
    ("pool-shards-not-list", lambda e: last(
        manifest_field(e, lambda m: m.update(shards=3)),
        (_imp(e, e.origin / "labels.csv"), ["manifest.json", "'shards'", "3"]))),
    ("pool-manifest-deep-nesting", lambda e: last(
        (e.own_pool() / "manifest.json").write_text(deep_json()),
        (_imp(e, e.origin / "labels.csv"), ["manifest.json", "nested too deeply"]))),
    ("pool-truncated-shard", lambda e: last(
        shard(e).write_bytes(shard(e).read_bytes()[:200]),
        (_imp(e, e.origin / "labels.csv"), ["image_act-00000.npy"]))),
    ("pool-nan-activation", lambda e: last(
        nan_shard(e), (_imp(e, e.origin / "labels.csv"), ["NaN or inf", "rows [7]"]))),
    ("pool-manifest-invalid", lambda e: last(
        (e.own_pool() / "manifest.json").write_text("{"),
        (_imp(e, e.origin / "labels.csv"), ["manifest.json"]))),
    ("pool-incomplete", lambda e: last(
        replace_in(e.own_pool() / "manifest.json", '"complete"', '"incomplete"'),
        (_imp(e, e.origin / "labels.csv"), ["status", "incomplete"]))),
    ("pool-items-garbage", lambda e: last(
        (e.own_pool() / "items.parquet").write_bytes(b"PAR1xx"),
        (_imp(e, e.origin / "labels.csv"), ["items.parquet"]))),
    ("pool-text-garbage", lambda e: last(
        (e.own_pool() / "text_act.npy").write_bytes(b"\x93NUMPY"),
        (_imp(e, e.origin / "labels.csv"), ["text_act.npy"]))),
    ("pool-counts-items-wrong", lambda e: last(
        manifest_field(e, lambda m: m["counts"].update(items=7)),
        (_imp(e, e.origin / "labels.csv"), ["manifest.json", "counts.items", "7"]))),
    ("pool-dims-text", lambda e: last(
        manifest_field(e, lambda m: m["dims"].update(image_act="wide")),
        (_imp(e, e.origin / "labels.csv"), ["manifest.json", "dims.image_act", "'wide'"]))),
    ("pool-classnames-missing", lambda e: last(
        manifest_field(e, lambda m: m.pop("classnames")),
        (_imp(e, e.origin / "labels.csv"), ["manifest.json", "classnames"]))),
    ("pool-not-found", lambda e: (["select", "--pool", str(e.tmp / "nopool"), "--run",
                                   str(e.tmp / "newrun"), "--no-progress"], ["nopool"])),
    # options: refused before any fitting or writing (no run directory appears)
    ("select-batch-typo", lambda e: (e.select("--batch", "divers"), ["divers"])),
    ("select-target-typo", lambda e: (e.select("--target", "sketchh"), ["sketchh", "sketch"])),
    ("select-target-path", lambda e: (e.select("--target", str(e.tmp / "tp")), ["tp"])),
    ("select-dedup-range", lambda e: (e.select("--dedup", "7"), ["dedup", "7"])),
    ("select-strategy-typo", lambda e: (e.select("--strategy", "best"), ["best"])),
    ("select-split-typo", lambda e: (e.select("--pool-split", "trian"), ["trian"])),
    ("loop-seeds-text", lambda e: (e.loop("--seeds", "a"), ["--seeds", "'a'"])),
    ("loop-target-typo", lambda e: (e.loop("--target", "moon"), ["moon"])),
    ("loop-strategy-typo", lambda e: (e.loop("--strategy", "nope"), ["nope"])),
    ("select-budget-zero", lambda e: (e.select("--budget", "0"), ["budget", "0"])),
    ("select-draws-zero", lambda e: (e.select("--draws", "0", "--strategy", "bald"),
                                     ["draws", "0"])),
    ("select-n-targets-zero", lambda e: (e.select("--n-targets", "0", "--strategy", "epig",
                                                  "--target", "sketch"), ["targets", "0"])),
    ("select-beta-negative", lambda e: (e.select("--beta", "-1", "--batch", "stochastic"),
                                        ["beta", "-1"])),
    ("select-weighting-typo", lambda e: (e.select("--weighting", "sofmax"), ["sofmax"])),
    ("select-vilu-without-model", lambda e: (e.select("--strategy", "vilu"),
                                             ["--vilu-model"])),
    ("select-vilu-model-missing", lambda e: (e.select("--strategy", "vilu", "--vilu-model",
                                                      str(e.tmp / "novilu")), ["novilu"])),
    ("select-labelstudio-root-inside", lambda e: (e.select("--labelstudio-root",
                                                           str(e.tmp / "elsewhere")),
                                                  ["elsewhere", "document root"])),
    ("loop-rounds-negative", lambda e: (e.loop("--rounds", "-1"), ["rounds", "-1"])),
    ("loop-refit-typo", lambda e: (e.loop("--refit", "recenter"), ["recenter"])),
    ("loop-budget-zero", lambda e: (e.loop("--budget", "0"), ["budget", "0"])),
    ("finetune-epochs-zero", lambda e: (["finetune", "--run", str(e.run), "--epochs", "0",
                                         "--no-progress"], ["max_epochs", "0"])),
    ("finetune-lr-negative", lambda e: (["finetune", "--run", str(e.run), "--lr", "-1",
                                         "--no-progress"], ["lr", "-1"])),
    ("finetune-refit-typo", lambda e: (["finetune", "--run", str(e.run), "--refit", "both",
                                        "--no-progress"], ["both"])),
    ("finetune-val-domain-typo", lambda e: (["finetune", "--run", str(e.run), "--val-domain",
                                             "moon", "--no-progress"], ["moon"])),
    ("finetune-device-cuda-index", lambda e: (["finetune", "--run", str(e.run), "--device",
                                               "cuda:7", "--no-progress"], ["cuda:7"])),
    # benchmark configs
    ("bench-yaml-syntax", lambda e: (["bench", str(e.write("b.yaml", "seeds: [0\nx: :")),
                                      "--out", str(e.tmp / "out")], ["b.yaml", "line"])),
    ("bench-top-level-list", lambda e: (["bench", str(e.write("b.yaml", "- 1\n- 2\n")),
                                         "--out", str(e.tmp / "out")], ["b.yaml", "top level"])),
    ("bench-dataset-escapes", lambda e: (["bench", str(e.write("b.yaml", json.dumps({
        "seeds": [0], "strategies": ["random"], "datasets": [{"name": "../x", "pool":
                                                              str(e.pool)}]}))),
        "--out", str(e.tmp / "out")], ["b.yaml", "'../x'", "datasets[0].name"])),
    ("bench-target-escapes", lambda e: (["bench", str(e.write("b.yaml", json.dumps({
        "seeds": [0], "strategies": ["random"], "datasets": [{
            "name": "d", "pool": str(e.pool), "targets": ["../../t"]}]}))),
        "--out", str(e.tmp / "out")], ["b.yaml", "'../../t'", "targets"])),
    ("bench-strategy-escapes", lambda e: (["bench", str(e.write("b.yaml", json.dumps({
        "seeds": [0], "strategies": [{"name": "a/b", "strategy": "random"}], "datasets": [{
            "name": "d", "pool": str(e.pool)}]}))), "--out", str(e.tmp / "out")],
        ["b.yaml", "'a/b'"])),
    ("bench-seeds-text", lambda e: (["bench", str(e.write("b.yaml", json.dumps({
        "seeds": ["a"], "strategies": ["random"], "datasets": [{"name": "d",
                                                               "pool": str(e.pool)}]}))),
        "--out", str(e.tmp / "out")], ["b.yaml", "seeds", "'a'"])),
    ("bench-dataset-not-mapping", lambda e: (["bench", str(e.write("b.yaml", json.dumps({
        "seeds": [0], "strategies": ["random"], "datasets": ["demo"]}))),
        "--out", str(e.tmp / "out")], ["b.yaml", "datasets[0]"])),
    ("bench-unknown-key", lambda e: (bench_file(e, {**BENCH_OK, "seed": 1, "datasets": [
        {"name": "d", "pool": str(e.pool)}]}), ["b.yaml", "unknown key", "seed"])),
    ("bench-strategy-typo", lambda e: (bench_file(e, {**BENCH_OK, "strategies": ["rnd"],
                                                      "datasets": [{"name": "d",
                                                                    "pool": str(e.pool)}]}),
                                       ["b.yaml", "rnd"])),
    ("bench-loop-option-typo", lambda e: (bench_file(e, {**BENCH_OK, "loop": {"rounds": "x"},
                                                         "datasets": [{"name": "d",
                                                                       "pool": str(e.pool)}]}),
                                          ["b.yaml", "rounds"])),
    # embedding inputs
    ("embed-header-only-manifest", lambda e: (["embed", "--data", e.manifest("path,label\n"),
                                               "--model-config", TINY, "--out",
                                               str(e.tmp / "np")], ["data.csv", "no rows"])),
    ("embed-empty-manifest", lambda e: (["embed", "--data", e.manifest(""), "--model-config",
                                         TINY, "--out", str(e.tmp / "np")],
                                        ["data.csv", "empty"])),
    ("embed-config-embed-dim-text", lambda e: (
        embed_with(e, embed_dim="big"), ["tiny-typed-embeddim.json", "'embed_dim'", "'big'"])),
    ("embed-config-width-list", lambda e: (
        embed_with(e, text_cfg__width=[64]), ["tiny-typed-textcfgwidth.json",
                                              "'text_cfg.width'"])),
    ("embed-config-tower-text", lambda e: (
        embed_with(e, vision_cfg="vit"), ["tiny-typed-visioncfg.json", "'vision_cfg'",
                                          "an object"])),
    ("embed-config-mlp-ratio-text", lambda e: (
        embed_with(e, vision_cfg__mlp_ratio="four"), ["'tiny-typed-visioncfgmlpratio'",
                                                      "cannot build"])),
    ("embed-checkpoint-shapes", lambda e: (["embed", "--data", image_manifest(e),
                                            "--model-config", TINY, "--checkpoint",
                                            checkpoint(e, {"logit_scale": torch.zeros(3)}),
                                            "--out", str(e.tmp / "np")],
                                           ["weights.pt", "does not fit"])),
    ("embed-checkpoint-pickle", lambda e: (["embed", "--data", image_manifest(e),
                                            "--model-config", TINY, "--checkpoint",
                                            checkpoint(e, {"x": Payload()}), "--out",
                                            str(e.tmp / "np")], ["weights.pt", "refused"])),
]


def prepare_case(world, tmp_path: Path, setup) -> tuple[list[str], list[str], dict]:
    """Copy the world's run and posterior into ``tmp_path`` and apply one case's ``setup``:
    ``(args, culprits, digest of every file the command must leave alone)``."""
    root, pool = world
    shutil.copytree(root / "run", tmp_path / "run")
    shutil.copytree(root / "posterior", tmp_path / "posterior")
    state = RunState.load(root / "run")
    env = Env(tmp_path, pool.path, tmp_path / "run", tmp_path / "posterior",
              next(s for s in state.queued), root)
    args, culprits = setup(env)
    return args, culprits, tree_digest(tmp_path, pool.path)


@pytest.mark.parametrize("name, setup", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_clear_paragraph_and_changes_nothing(world, tmp_path, name, setup):
    _, pool = world
    args, culprits, before = prepare_case(world, tmp_path, setup)
    result = runner.invoke(app, args)
    out = " ".join(result.output.split())
    assert result.exit_code in (1, 2), out  # 2: click's own usage errors
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output and "pickled code ran" not in result.output
    for culprit in culprits:
        assert culprit in out, f"{culprit!r} not in: {out}"
    assert not LIBRARY_TEXT.search(out), f"library text in: {out}"
    assert tree_digest(tmp_path, pool.path) == before


def test_corpus_is_large_enough():
    assert len(CASES) >= 100


def test_debug_adds_the_library_message_after_the_paragraph(world, tmp_path):
    _, pool = world
    post = tmp_path / "posterior"
    shutil.copytree(world[0] / "posterior", post)
    (post / "posterior.safetensors").write_bytes(b"\xff" * 64)
    args = ["select", "--pool", str(pool.path), "--run", str(tmp_path / "r"), "--posterior",
            str(post), "--strategy", "bald", "--no-progress"]
    plain, debug = runner.invoke(app, args), runner.invoke(app, ["--debug", *args])
    assert plain.exit_code == debug.exit_code == 1
    assert "debug:" not in plain.output and "SafetensorError" not in plain.output
    first, *more = debug.output.strip().splitlines()
    assert first == plain.output.strip().splitlines()[0]
    assert any(line.startswith("debug: SafetensorError: ") for line in more), debug.output


def test_posterior_fit_refuses_non_finite_activations(world):
    from activevlm.bayes.posterior import BayesVLMPosterior, PosteriorError

    _, pool = world
    act = np.asarray(pool.image_activations, dtype=np.float32).copy()
    act[3, 1] = np.inf
    with pytest.raises(PosteriorError, match="image projection contain NaN or inf"):
        BayesVLMPosterior.fit(pool.head, act, pool.text_activations, mode="labels",
                              progress=False, device="cpu")
