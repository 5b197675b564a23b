"""Ray pipelines on a local 2-CPU Ray cluster: the same pool files, scores, on-disk index and
queue as the single-process paths; a killed Ray embed resumes; clear errors without Ray."""

from __future__ import annotations

import json
import logging
import pickle
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from activevlm.acquisition import Heuristic, score_pool, score_pool_ray
from activevlm.acquisition import ray_scoring as ray_scoring_module
from activevlm.bayes.draws import JointDraws
from activevlm.bayes.from_pool import fit_pool_posterior
from activevlm.bayes.marginal_draws import SCORING_CHUNK, MarginalDraws
from activevlm.cli.main import app
from activevlm.data import load_dataset
from activevlm.index import EmbeddingIndex, StaleIndexError, ray_filler
from activevlm.models import load_vlm, register_model_config
from activevlm.pool import ShardedArray, embed_dataset, embed_dataset_ray
from activevlm.runs import RunState, SelectConfig
from activevlm.runs.select import select_round
from activevlm.utils.ray_cluster import RayUnavailableError, connect
from tests.posterior_toy import toy_posterior
from tests.test_pool import CONFIGS, CountingVLM, make_images
from tests.toy import toy_pool

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray with 2 CPUs whose workers import this checkout (and this test module)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200_000_000,
             log_to_driver=False, logging_level=logging.WARNING,
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    yield connect(progress=False)  # joins the session above
    ray.shutdown()


def test_unreachable_address_and_missing_ray_are_one_paragraph(tmp_path, monkeypatch):
    """Runs before the module's Ray session starts (tests run in file order)."""
    import ray

    assert not ray.is_initialized()
    monkeypatch.setattr("activevlm.utils.ray_cluster.CONNECT_TIMEOUT_S", 1.0)
    out = runner.invoke(app, ["select", "--budget", "5", "--strategy", "entropy",
                              "--untargeted", "--run", str(tmp_path / "run"),
                              "--ray-address", "127.0.0.1:9", "--no-progress"])
    text = " ".join(out.output.split())
    assert out.exit_code == 1 and "Traceback" not in out.output, out.output
    assert "error: no Ray cluster answers at '127.0.0.1:9'" in text
    with pytest.raises(RayUnavailableError, match="not HOST:PORT"):
        connect("localhost")
    assert not ray.is_initialized()

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails
    out = runner.invoke(app, ["embed", "--data", "demo", "--model", "activevlm-demo",
                              "--out", str(tmp_path / "p"), "--ray"])
    text = " ".join(out.output.split())
    assert out.exit_code == 1 and "Traceback" not in out.output, out.output
    assert text.startswith("error: Ray is not installed") and "[ray]" in text
    assert not (tmp_path / "p").exists()


# --- embedding ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """12 images and one that is not an image: 13 rows, shards of 5 (5 + 5 + 3)."""
    root = make_images(tmp_path_factory.mktemp("images"))
    (root / "cat" / "notes.jpg").write_text("this is not an image\n")
    return load_dataset(f"folder:{root}")


@pytest.fixture(scope="module")
def clip():
    return load_vlm(register_model_config(CONFIGS / "tiny-clip.json"), device="cpu")


@pytest.fixture(scope="module")
def reference(dataset, clip, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("single") / "pool"
    embed_dataset(dataset, clip, out, batch_size=2, shard_size=5, progress=False)
    return out


class CrashingVLM(CountingVLM):
    """Raises from its ``crash_at_batch``-th batch on (in every Ray actor that holds it)."""

    def __getattr__(self, name):
        if name.startswith("_"):  # unpickling looks up dunders before _vlm exists
            raise AttributeError(name)
        return getattr(self._vlm, name)

    def image_activations(self, pixels, batch_size=256):
        if self.batches >= self.crash_at_batch:
            raise RuntimeError("simulated crash")
        return super().image_activations(pixels, batch_size)


def pool_files(path: Path) -> dict[str, bytes]:
    """Every file of a pool by relative name; the manifest without its creation time."""
    files = {str(f.relative_to(path)): f.read_bytes() for f in sorted(path.rglob("*"))
             if f.is_file()}
    manifest = json.loads(files.pop("manifest.json"))
    del manifest["created"]
    files["manifest.json"] = json.dumps(manifest, sort_keys=True).encode()
    return files


def test_killed_ray_embed_resumes_and_writes_the_single_process_pool(ray_cluster, dataset,
                                                                      clip, reference, tmp_path):
    """Every file byte for byte (the shard finished by the killed run kept, the others
    written by two actors of the resumed one), the unreadable image in failures.parquet."""
    out = tmp_path / "pool"
    # One actor runs its shards one after the other (in the order Ray Data hands them over),
    # in batches of 2: the shard that includes its batch 3 fails, and every later batch.
    with pytest.raises(Exception, match="simulated crash"):
        embed_dataset_ray(dataset, CrashingVLM(clip, crash_at_batch=3), out, batch_size=2,
                          shard_size=5, actors=1, progress=False)
    shards = out / "shards"
    markers = sorted(p.name for p in shards.glob("shard-*.json"))
    assert len(markers) == 1, f"one shard fits in 3 batches; finished: {markers}"
    assert json.loads((out / "manifest.json").read_text())["status"] == "incomplete"
    kept = shards / markers[0].replace("shard-", "image_act-").replace(".json", ".npy")
    finished = kept.stat().st_mtime_ns

    pool = embed_dataset_ray(dataset, clip, out, batch_size=2, shard_size=5, actors=2,
                             progress=False)
    assert kept.stat().st_mtime_ns == finished
    assert pool.manifest["counts"] == {"planned": 13, "items": 12, "failures": 1, "shards": 3}
    assert list(pool.failures["sample_id"]) == ["cat/notes.jpg"]
    ours, theirs = pool_files(pool.path), pool_files(reference)
    assert sorted(ours) == sorted(theirs)
    different = [name for name in ours if ours[name] != theirs[name]]
    assert not different, f"files differ from the single-process pool: {different}"
    assert not list(out.rglob(".*tmp*")), "temporary files left behind"


# --- scoring --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def scoring_inputs(tmp_path_factory):
    """SigLIP-like joint draws (image bias, residual) and a 1,000-row pool stored as three
    memory-mapped shards, as a pool holds them (sent to the actors as file names)."""
    post, text_act = toy_posterior(D=8, d_img=12, d_txt=6, C=7, siglip=True, scale=5.0,
                                   dtype=torch.float32)
    draws = JointDraws.from_posterior(post, text_act, 16, torch.Generator().manual_seed(0),
                                      device="cpu")
    rng = np.random.default_rng(0)
    folder = tmp_path_factory.mktemp("shards")
    arrays = {}
    for kind, dim in (("act", 12), ("res", 8)):
        files = []
        for k, n in enumerate((400, 350, 250)):
            files.append(folder / f"{kind}-{k}.npy")
            np.save(files[-1], rng.normal(size=(n, dim)).astype(np.float32))
        arrays[kind] = ShardedArray(files, dim)
    return draws, arrays["act"], arrays["res"]


def test_ray_scores_equal_score_pool(ray_cluster, scoring_inputs):
    """BALD here; EPIG and entropy through selection below."""
    draws, act, residual = scoring_inputs
    assert len(pickle.dumps(act)) < 4096  # the actors get file names, not 48 kB of rows
    kwargs = dict(residual=residual, chunk_size=64, progress=False)
    expected = score_pool(draws, act, "bald", **kwargs)
    # 200 rows per task is rounded up to 4 chunks: 4 ranges that cut through the shards
    ours = score_pool_ray(draws, act, "bald", rows_per_task=200, actors=2, **kwargs)
    assert ours.dtype == np.float64 and ours.shape == (1000,)
    np.testing.assert_array_equal(ours, expected)


def test_ray_scores_per_input_draws_like_score_pool(ray_cluster, scoring_inputs):
    """What `select` runs for BALD and entropy: per-input draws, 128-row chunks."""
    _, act, residual = scoring_inputs
    post, text_act = toy_posterior(D=8, d_img=12, d_txt=6, C=7, siglip=True, scale=5.0,
                                   dtype=torch.float32)
    draws = MarginalDraws.from_posterior(post, text_act, 16, torch.Generator().manual_seed(0),
                                         device="cpu")
    kwargs = dict(residual=residual, chunk_size=SCORING_CHUNK, progress=False)
    for name in ("bald", "entropy"):
        expected = score_pool(draws, act, name, **kwargs)
        ours = score_pool_ray(draws, act, name, rows_per_task=300, actors=2, **kwargs)
        np.testing.assert_array_equal(ours, expected)


def test_ray_scoring_refuses_chunkwise_random_heuristics(scoring_inputs):
    draws, act, _ = scoring_inputs
    noisy = Heuristic("noisy", lambda probs, generator=None, **_: torch.rand(
        probs.shape[1], generator=generator), ("generator",))
    with pytest.raises(ValueError, match="draws random numbers"):
        score_pool_ray(draws, act, noisy, generator=torch.Generator().manual_seed(0))


# --- index --------------------------------------------------------------------------------

def test_ray_filled_on_disk_index_equals_the_single_process_one(ray_cluster, scoring_inputs,
                                                               tmp_path):
    """1,000 rows in three memory-mapped shards, blocks of 300 rows (4 Ray tasks, cutting
    through the shards): same lists on disk, same search results, metadata and recall."""
    _, act, _ = scoring_inputs
    ids = [f"img/{i}.jpg" for i in range(act.shape[0])]
    kwargs = dict(ids=ids, model_id="m", ivf_threshold=1, nlist=20, chunk_size=300,
                  progress=False)
    single = EmbeddingIndex.build(act, on_disk=tmp_path / "single", **kwargs)
    ours = EmbeddingIndex.build(act, on_disk=tmp_path / "ray", fill=ray_filler(), **kwargs)
    assert ours.metadata() == single.metadata() and ours.n == 1000 and ours.on_disk
    assert (tmp_path / "ray" / "index.ivfdata").read_bytes() == \
        (tmp_path / "single" / "index.ivfdata").read_bytes()
    assert not (tmp_path / "ray" / "index.blocks").exists()
    q = act[::50]
    for nprobe in (1, 4, 20):
        single.nprobe = ours.nprobe = nprobe
        s1, i1 = single.search(q, 10)
        s2, i2 = ours.search(q, 10)
        np.testing.assert_array_equal(i2, i1)
        np.testing.assert_array_equal(s2, s1)
    ours.save(tmp_path / "ray")
    loaded = EmbeddingIndex.load(tmp_path / "ray", model_id="m", ids=ids)
    np.testing.assert_array_equal(loaded.search(q, 10)[1], single.search(q, 10)[1])
    with pytest.raises(StaleIndexError, match="ids_sha256"):
        EmbeddingIndex.load(tmp_path / "ray", model_id="m", ids=ids[::-1])


# --- selection ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    pool = toy_pool(tmp_path_factory.mktemp("toy"), domains=("photo", "sketch", "art"), per=10)
    return pool, fit_pool_posterior(pool, split="train", progress=False)


def test_select_round_on_ray_queues_the_same_items(ray_cluster, toy, tmp_path, monkeypatch):
    """Untargeted EPIG (target: the sketch domain's val items) on 72 train items."""
    pool, posterior = toy
    monkeypatch.setattr(ray_scoring_module, "DEFAULT_CHUNKS_PER_TASK", 2)  # 5 ranges of 16
    calls = []

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return score_pool_ray(*args, **kwargs)

    monkeypatch.setattr(ray_scoring_module, "score_pool_ray", spy)
    results = {}
    for name, ray in (("single", False), ("ray", True)):
        state = RunState.create(tmp_path / name, str(pool.path), pool.model_id, pool.classnames)
        config = SelectConfig(budget=9, strategy="epig", targeted=False, n_draws=12, seed=5,
                              chunk_size=8, ray=ray, target_domain="sketch")
        results[name] = select_round(pool, state, config, posterior=posterior, progress=False)
    single, ours = results["single"], results["ray"]
    pd.testing.assert_frame_equal(ours.queue, single.queue)
    pd.testing.assert_frame_equal(pd.read_parquet(ours.paths["scores"]),
                                  pd.read_parquet(single.paths["scores"]))
    assert len(pd.read_parquet(ours.paths["scores"])) == 72  # every train item was scored
    assert len(calls) == 1 and calls[0]["address"] is None  # the Ray round went through Ray


def test_cli_select_on_ray_queues_the_same_items(ray_cluster, toy, tmp_path):
    pool, _ = toy
    args = ["select", "--pool", str(pool.path), "--budget", "5", "--strategy", "entropy",
            "--untargeted", "--seed", "2", "--no-progress"]
    plain = runner.invoke(app, [*args, "--run", str(tmp_path / "a")])
    on_ray = runner.invoke(app, [*args, "--run", str(tmp_path / "b"), "--ray"])
    assert plain.exit_code == 0 and on_ray.exit_code == 0, on_ray.output
    assert RunState.load(tmp_path / "b").rounds[0]["ray"] is True
    assert (pd.read_csv(tmp_path / "a" / "round_000" / "queue.csv").equals(
        pd.read_csv(tmp_path / "b" / "round_000" / "queue.csv")))
