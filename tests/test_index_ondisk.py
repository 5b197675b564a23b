"""IVF built in bounded memory: blocks filled separately and merged on disk vs in memory."""

from __future__ import annotations

import shutil

import faiss
import numpy as np
import pytest

from activevlm.index import EmbeddingIndex, StaleIndexError
from activevlm.index.ondisk import READ_FLAGS, fill_block, merge_blocks, train_ivf


def clustered(n: int, dim: int = 16, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((30, dim))
    return (c[rng.integers(0, 30, n)] + 0.5 * rng.standard_normal((n, dim))).astype(np.float32)


def unit(x: np.ndarray) -> np.ndarray:
    x = x.copy()
    faiss.normalize_L2(x)  # what the index does, to the last bit
    return x


def test_blocks_merged_on_disk_search_like_one_in_memory_ivf(tmp_path):
    x = clustered(3000)
    trained = tmp_path / "trained.faiss"
    faiss.write_index(train_ivf(x, 40, sample_per_list=32, niter=5, seed=3), str(trained))
    cuts = [0, 1000, 1001, 2300, 3000]  # uneven blocks, one of a single row
    blocks = [fill_block(trained, x, slice(a, b), tmp_path / f"b{k}.faiss", chunk_size=333)
              for k, (a, b) in enumerate(zip(cuts[:-1], cuts[1:], strict=True))]
    merged = merge_blocks(trained, blocks, tmp_path / "out", "idx")
    assert (tmp_path / "out" / "idx.ivfdata").stat().st_size > 0
    memory = faiss.read_index(str(trained))
    memory.add_with_ids(unit(x), np.arange(len(x)))
    assert merged.ntotal == memory.ntotal == len(x)
    q = unit(clustered(50, seed=1))
    for nprobe in (1, 5, 40):
        params = faiss.SearchParametersIVF(nprobe=nprobe)
        s1, i1 = merged.search(q, 10, params=params)
        s2, i2 = memory.search(q, 10, params=params)
        np.testing.assert_array_equal(i1, i2)
        np.testing.assert_array_equal(s1, s2)
    # nprobe = nlist scans every list: exact
    exact = np.argsort(-(q @ unit(x).T), axis=1, kind="stable")[:, :10]
    np.testing.assert_array_equal(merged.search(q, 10, params=params)[1], exact)


def test_on_disk_index_calibrated_saved_moved_loaded_and_stale_refused(tmp_path):
    x = clustered(4000)
    ids = [f"img/{i}.jpg" for i in range(len(x))]
    folder = tmp_path / "index"
    index = EmbeddingIndex.build(x, ids=ids, model_id="m", ivf_threshold=1, on_disk=folder,
                                 chunk_size=1500, progress=False)
    assert index.on_disk and index.recall >= 0.95
    index.save(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["index.faiss", "index.ivfdata",
                                                        "index.json"]
    moved = tmp_path / "moved"
    shutil.move(folder, moved)  # the lists are found beside the index file
    loaded = EmbeddingIndex.load(moved, ids=ids, model_id="m")
    assert loaded.on_disk and loaded.nprobe == index.nprobe and loaded.recall == index.recall
    q = clustered(20, seed=2)
    excluded = np.zeros(len(x), dtype=bool)
    excluded[::3] = True
    s1, i1 = loaded.search(q, 5, exclude=excluded)
    s2, i2 = index.search(q, 5, exclude=excluded)
    np.testing.assert_array_equal(i1, i2)
    assert not excluded[i1].any()
    np.testing.assert_allclose(loaded.vectors([7]), unit(x[[7]]), atol=1e-6)
    with pytest.raises(StaleIndexError, match="ids_sha256"):
        EmbeddingIndex.load(moved, ids=ids[::-1], model_id="m")
    with pytest.raises(StaleIndexError, match="n is 4000"):
        EmbeddingIndex.load(moved, n=3999)
    assert faiss.read_index(str(moved / "index.faiss"), READ_FLAGS).ntotal == len(x)
