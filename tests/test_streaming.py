"""Pool data read in chunks from the memory map: lazy row views, the posterior fit fed from
them, and image embeddings written once per head."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from activevlm.bayes.from_pool import fit_pool_posterior
from activevlm.bayes.posterior import BayesVLMPosterior
from activevlm.models.head import ProjectionHead
from activevlm.pool import RowView, ShardedArray, image_embedding_shards
from tests.toy import toy_pool


class Spy:
    """An array-like that records the row indices of every read."""

    def __init__(self, array):
        self.array, self.reads = array, []

    @property
    def shape(self):
        return self.array.shape

    def __getitem__(self, key):
        self.reads.append(np.atleast_1d(np.arange(len(self.array))[key]))
        return self.array[key]


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    return toy_pool(tmp_path_factory.mktemp("toy"), per=12)


def test_row_view_reads_only_the_rows_asked_for_in_ascending_order(tmp_path):
    data = np.random.default_rng(0).standard_normal((50, 3)).astype(np.float32)
    for k, part in enumerate((data[:20], data[20:])):
        np.save(tmp_path / f"s{k}.npy", part)
    rows = np.random.default_rng(1).permutation(50)[:30]
    spy = Spy(ShardedArray([tmp_path / "s0.npy", tmp_path / "s1.npy"], 3))
    view = RowView(spy, rows)
    assert view.shape == (30, 3) and len(view) == 30
    np.testing.assert_array_equal(view[5:17], data[rows[5:17]])
    assert len(spy.reads) == 1 and sorted(spy.reads[0]) == list(spy.reads[0])
    assert set(spy.reads[0]) == set(rows[5:17])
    np.testing.assert_array_equal(view[3], data[rows[3]])


def test_posterior_fit_streams_batches_and_equals_the_in_memory_fit(pool, monkeypatch):
    spy = Spy(pool.image_activations)
    monkeypatch.setattr(pool, "image_activations", spy)
    post = fit_pool_posterior(pool, split="train", batch_size=16, seed=3, device="cpu",
                              progress=False)
    assert spy.reads and max(len(r) for r in spy.reads) <= 16  # never the whole split
    idx = pool.indices(split="train")
    idx = idx[np.random.default_rng(3).permutation(len(idx))]
    ref = BayesVLMPosterior.fit(pool.head, spy.array[idx], pool.caption_activations[idx],
                                mode="pairs", batch_size=16, device="cpu", progress=False)
    for a, b in ((post.image, ref.image), (post.text, ref.text)):
        torch.testing.assert_close(a.A, b.A)
        torch.testing.assert_close(a.B, b.B)
        assert a.prior_precision == pytest.approx(b.prior_precision)


class Killed(Exception):
    """Stands for the process dying mid-run."""


def other_head(head: ProjectionHead) -> ProjectionHead:
    return ProjectionHead(head.image_weight * 1.5, head.text_weight,
                          logit_scale=head.logit_scale)


def test_image_embeddings_are_written_once_per_head(pool, tmp_path, monkeypatch):
    folder = tmp_path / "emb"
    emb = image_embedding_shards(pool, folder=folder, rows_per_shard=7)
    assert emb.shape == (len(pool), pool.head.embed_dim) and len(emb.files) > 2
    np.testing.assert_allclose(emb[:], pool.image_embeddings().numpy(), rtol=1e-6, atol=1e-6)

    def no_compute(*args, **kwargs):
        raise AssertionError("recomputed")

    with monkeypatch.context() as m:  # the same head: read back, nothing computed
        m.setattr(type(pool), "image_embeddings", no_compute)
        np.testing.assert_array_equal(image_embedding_shards(pool, folder=folder,
                                                             rows_per_shard=7)[:], emb[:])
    head2 = other_head(pool.head)  # another head in the same folder: recomputed
    emb2 = image_embedding_shards(pool, head2, folder=folder, rows_per_shard=7)
    np.testing.assert_allclose(emb2[:], pool.image_embeddings(head=head2).numpy(), rtol=1e-6,
                               atol=1e-6)
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["meta.json", *(f.name for f in emb2.files)])


def test_interrupted_embedding_resumes_only_for_the_same_head(pool, tmp_path, monkeypatch):
    folder = tmp_path / "emb"
    calls = []
    real = type(pool).image_embeddings

    def crash_on_third(self, rows, head=None):
        calls.append(len(rows))
        if len(calls) == 3 and not (folder / "emb-00003.npy").exists() and \
                (folder / "emb-00001.npy").exists():
            raise Killed  # the first run dies while computing its third shard
        return real(self, rows, head)

    monkeypatch.setattr(type(pool), "image_embeddings", crash_on_third)
    with pytest.raises(Killed):
        image_embedding_shards(pool, folder=folder, rows_per_shard=10)
    assert not (folder / "meta.json").exists() and (folder / "pending.json").exists()
    calls.clear()
    emb = image_embedding_shards(pool, folder=folder, rows_per_shard=10)  # resumes
    assert len(calls) == len(emb.files) - 2
    np.testing.assert_allclose(emb[:], real(pool, np.arange(len(pool))).numpy(), rtol=1e-6,
                               atol=1e-6)
    (folder / "meta.json").unlink()  # a half-written set of one head is not reused for another
    (folder / "pending.json").write_text('{"fingerprint": "someone else"}')
    head2 = other_head(pool.head)
    emb2 = image_embedding_shards(pool, head2, folder=folder, rows_per_shard=10)
    np.testing.assert_allclose(emb2[:], real(pool, np.arange(len(pool)), head2).numpy(),
                               rtol=1e-6, atol=1e-6)
