"""Pool.rows: the activations and SigLIP residuals of chosen rows, eager or lazy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from activevlm.pool import RowView
from tests.toy import toy_pool


@pytest.fixture(scope="module", params=["tiny-clip", "tiny-siglip"])
def pool(request, tmp_path_factory):
    return toy_pool(tmp_path_factory.mktemp(request.param), request.param, per=3)


def test_rows_are_the_stored_rows_in_the_given_order(pool):
    idx = np.array([7, 0, 7, 3, len(pool) - 1])
    act, res = pool.rows(idx)
    full_act = np.load(pool.image_activations.files[0])  # the toy pool has one shard
    assert act.dtype == np.float32 and np.array_equal(act, full_act[idx])
    if pool.image_residuals is None:
        assert res is None
    else:
        assert np.array_equal(res, np.load(pool.image_residuals.files[0])[idx])
    lazy_act, lazy_res = pool.rows(idx, lazy=True)
    assert isinstance(lazy_act, RowView) and lazy_act.shape == act.shape and len(lazy_act) == 5
    assert np.array_equal(lazy_act[1:4], act[1:4])
    assert (lazy_res is None) == (res is None)
    if res is not None:
        assert np.array_equal(lazy_res[[4, 0]], res[[4, 0]])
    empty, _ = pool.rows(np.zeros(0, dtype=np.int64))
    assert empty.shape == (0, act.shape[1])


def test_image_embeddings_apply_the_head_to_rows(pool):
    idx = np.array([2, 5, 1])
    act, res = pool.rows(idx)
    expected = pool.head.image_embeddings(torch.from_numpy(act),
                                          None if res is None else torch.from_numpy(res))
    assert torch.allclose(pool.image_embeddings(idx, chunk_size=2), expected, atol=1e-6)
