"""StreamedNeighbours: exact k-NN streamed from .npy shards, against brute force numpy."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from activevlm.index import EmbeddingIndex, StreamedNeighbours, nearest_unique
from activevlm.index.streamed import merge_topk

DIM = 16
SHARD_ROWS = (70, 33, 1, 100)  # uneven shards; chunk sizes below cut across them


def write_shards(folder, x: np.ndarray, sizes=SHARD_ROWS) -> list:
    files, start = [], 0
    for k, n in enumerate(sizes):
        files.append(folder / f"emb-{k:05d}.npy")
        np.save(files[-1], x[start : start + n])
        start += n
    assert start == len(x)
    return files


def brute_knn(base: np.ndarray, queries: np.ndarray, k: int, excluded: np.ndarray):
    """float64 cosine similarities; order by similarity descending, then id ascending."""
    b = base / np.linalg.norm(base, axis=1, keepdims=True)
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    sims = q.astype(np.float64) @ b.T.astype(np.float64)
    ids = np.broadcast_to(np.arange(len(base)), sims.shape)
    out_s = np.full((len(q), k), -np.inf)
    out_i = np.full((len(q), k), -1, dtype=np.int64)
    for r in range(len(q)):
        allowed = ~excluded
        order = np.lexsort((ids[r][allowed], -sims[r][allowed]))[:k]
        out_s[r, : len(order)] = sims[r][allowed][order]
        out_i[r, : len(order)] = ids[r][allowed][order]
    return out_s, out_i


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    base = rng.standard_normal((sum(SHARD_ROWS), DIM)).astype(np.float32)
    queries = rng.standard_normal((40, DIM)).astype(np.float32)
    return base, queries, rng.random(len(base)) < 0.3


@pytest.mark.parametrize(("chunk_rows", "query_block"), [(17, 7), (1, 40), (1000, 1), (5, 3)])
def test_equals_brute_force_with_exclusions_across_chunks(tmp_path, data, chunk_rows,
                                                          query_block):
    base, queries, excluded = data
    files = write_shards(tmp_path, base)
    search = StreamedNeighbours(files, DIM, chunk_rows=chunk_rows, query_block=query_block)
    assert search.n == len(base)
    for k in (1, 12):
        sims, ids = search.search(queries, k, exclude=excluded)
        ref_s, ref_i = brute_knn(base, queries, k, excluded)
        np.testing.assert_array_equal(ids, ref_i)
        np.testing.assert_allclose(sims, ref_s, atol=1e-6)
        assert sims.dtype == np.float32 and ids.dtype == np.int64
    # row ids as exclusion, and more neighbours than rows left: padded with -1 / -inf
    rows = np.flatnonzero(excluded)
    sims, ids = search.search(queries[:3], len(base), exclude=rows)
    left = int((~excluded).sum())
    assert (ids[:, left:] == -1).all() and np.isneginf(sims[:, left:]).all()
    assert all(set(r[:left].tolist()) == set(np.flatnonzero(~excluded).tolist()) for r in ids)


def test_ties_rank_the_lowest_id_first(tmp_path):
    """Exact arithmetic (entries 0/±1, four non-zeros: unit rows of ±0.5) with many equal
    similarities inside and across chunks and shards: ids equal the brute-force order."""
    rng = np.random.default_rng(1)
    n = sum(SHARD_ROWS)
    base = np.zeros((n, DIM), dtype=np.float32)
    for r in range(n):
        base[r, rng.choice(DIM, 4, replace=False)] = rng.choice([-1.0, 1.0], 4)
    base[150:160] = base[3]  # exact duplicates of row 3 in later chunks / shards
    queries = base[[3, 10, 50]] + 0  # its own duplicates tie with it
    excluded = np.zeros(n, dtype=bool)
    excluded[[10, 155]] = True
    files = write_shards(tmp_path, base)
    ref_s, ref_i = brute_knn(base, queries, 20, excluded)
    assert (ref_s[0, :10] == 1.0).all()  # the test has ties at the top and across chunks
    for chunk_rows, query_block in [(7, 2), (64, 3), (1000, 1000)]:
        sims, ids = StreamedNeighbours(files, DIM, chunk_rows=chunk_rows,
                                       query_block=query_block).search(queries, 20,
                                                                       exclude=excluded)
        np.testing.assert_array_equal(ids, ref_i)
        np.testing.assert_array_equal(sims, ref_s.astype(np.float32))


def test_merge_keeps_earlier_ids_on_ties_and_takes_strictly_better():
    best_s = np.array([[0.9, 0.5, -np.inf]], dtype=np.float32)
    best_i = np.array([[4, 2, -1]])
    sims = np.array([[0.5, 0.95, 0.5, 0.1]], dtype=np.float32)
    merge_topk(best_s, best_i, sims, np.array([10, 11, 12, 13]))
    np.testing.assert_array_equal(best_i, [[11, 4, 2]])  # 0.5 of id 10 loses to id 2
    np.testing.assert_array_equal(best_s, np.float32([[0.95, 0.9, 0.5]]))


def test_same_neighbours_as_the_flat_index_and_nearest_unique_unchanged(tmp_path, data):
    base, queries, excluded = data
    search = StreamedNeighbours(write_shards(tmp_path, base), DIM, chunk_rows=19)
    flat = EmbeddingIndex.build(base, progress=False)
    s1, i1 = search.search(queries, 10, exclude=excluded)
    s2, i2 = flat.search(queries, 10, exclude=excluded)
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_allclose(s1, s2, atol=1e-6)
    for wanted in (5, 40, 150):  # fewer, as many, more rows than targets
        np.testing.assert_array_equal(nearest_unique(search, queries, wanted, exclude=excluded),
                                      nearest_unique(flat, queries, wanted, exclude=excluded))


def test_nearest_unique_searches_only_the_targets_that_can_take_a_row(tmp_path, data):
    base, queries, _ = data
    exact = StreamedNeighbours(write_shards(tmp_path, base), DIM)
    seen = []

    class Spy:
        n = exact.n

        def search(self, q, k, *, exclude=None):
            seen.append(len(q))
            return exact.search(q, k, exclude=exclude)

    rows = nearest_unique(Spy(), queries, 8)
    assert seen and max(seen) == 8
    np.testing.assert_array_equal(rows, nearest_unique(exact, queries[:8], 8))


def test_bad_shards_are_named(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((4, DIM + 1), dtype=np.float32))
    with pytest.raises(ValueError, match=r"a\.npy: expected a float32 array of shape \[n, 16\]"):
        StreamedNeighbours([tmp_path / "a.npy"], DIM)
    np.save(tmp_path / "b.npy", np.ones((50, DIM), dtype=np.float32))
    raw = (tmp_path / "b.npy").read_bytes()
    (tmp_path / "b.npy").write_bytes(raw[:-100])  # truncated after its header was written
    search = StreamedNeighbours([tmp_path / "b.npy"], DIM)
    with pytest.raises(ValueError, match=r"b\.npy: file ends early"):
        search.search(np.ones((1, DIM)), 3)


RSS_SCRIPT = textwrap.dedent("""
    import sys
    from pathlib import Path
    import numpy as np
    from activevlm.index import StreamedNeighbours
    from activevlm.pool.sharded import ShardedArray

    def status(field):
        for line in open("/proc/self/status"):
            if line.startswith(field):
                return int(line.split()[1]) * 1024
    files = sorted(Path(sys.argv[1]).glob("emb-*.npy"))
    q = np.random.default_rng(0).standard_normal((64, 512)).astype(np.float32)
    before = status("VmRSS:")
    if sys.argv[2] == "streamed":
        StreamedNeighbours(files, 512, chunk_rows=8192).search(q, 10)
    elif sys.argv[2] == "sharded":  # memory-mapped, pages released after each read
        arr = ShardedArray(files, 512)
        for _, x in arr.chunks(8192):
            pass
        rows = np.random.default_rng(0).permutation(len(arr))
        for i in range(0, len(rows), 1024):
            arr[rows[i : i + 1024]]
    else:  # plain memory maps, the contrast: every touched page stays resident
        maps = [np.load(f, mmap_mode="r") for f in files]
        for m in maps:
            float(m.sum())
    print(status("VmHWM:") - before)
""")


@pytest.mark.parametrize("mode", ["streamed", "sharded", "mmap"])
def test_a_pass_over_300_mb_of_shards_keeps_the_resident_set_small(tmp_path, mode):
    """Memory behaviour, not timing, over 4 x 80 MB shards: the high-water mark of a streamed
    search grows by < 100 MB; of a ``ShardedArray`` read in chunks and then in shuffled
    batches by < 130 MB (the kernel may map a whole shard for a scattered read before it is
    released); plain memory maps, the contrast, keep > 250 MB resident."""
    rng = np.random.default_rng(0)
    for k in range(4):
        np.save(tmp_path / f"emb-{k:05d}.npy",
                rng.standard_normal((40_000, 512), dtype=np.float32))
    out = subprocess.run([sys.executable, "-c", RSS_SCRIPT, str(tmp_path), mode],
                         capture_output=True, text=True, check=True)
    grown = int(out.stdout.split()[-1]) / 2**20
    if mode != "mmap":
        assert grown < {"streamed": 100, "sharded": 130}[mode], f"grew by {grown:.0f} MB"
    else:
        assert grown > 250, f"memory-mapped pass grew by only {grown:.0f} MB"
