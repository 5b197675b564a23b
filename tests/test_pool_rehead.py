"""rehead_pool: a pool for a model that shares another pool's image encoder must equal what
embedding the dataset with that model writes, and refuse a model with another encoder."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from activevlm.models import load_vlm, register_model_config
from activevlm.pool import PoolError, embed_dataset, open_pool
from activevlm.pool.rehead import rehead_pool
from tests.toy import CONFIGS, toy_dataset

torch.set_num_threads(2)
NAME = "tiny-cnn-clip"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A pool of model A; model B = A's trunk with another projection and text tower; model C
    another trunk. Returns the dataset, the source pool, B, C and the root folder."""
    root = tmp_path_factory.mktemp("rehead")
    register_model_config(CONFIGS / f"{NAME}.json")
    ds = toy_dataset(root / "images", per=3)
    a = load_vlm(NAME, device="cpu", seed=0)
    other = load_vlm(NAME, device="cpu", seed=1).model.state_dict()
    mixed = {k: v if k.startswith("visual.trunk.") else other[k]
             for k, v in a.model.state_dict().items()}
    torch.save(mixed, root / "b.pt")
    torch.save(other, root / "c.pt")
    b = load_vlm(NAME, checkpoint=root / "b.pt", device="cpu")
    c = load_vlm(NAME, checkpoint=root / "c.pt", device="cpu")
    source = embed_dataset(ds, a, root / "a", batch_size=8, shard_size=7, progress=False)
    return ds, source, b, c, root


def test_rehead_equals_embedding_with_the_new_model(world):
    ds, source, b, _, root = world
    ref = embed_dataset(ds, b, root / "b-ref", batch_size=8, shard_size=7, progress=False)
    pool = rehead_pool(source, b, root / "b")
    assert pool.model_id == b.model_id == ref.model_id
    assert pool.manifest["image_act_from"]["model_id"] == source.model_id
    assert pool.items.equals(ref.items)
    np.testing.assert_allclose(pool.image_activations[:], ref.image_activations[:], atol=1e-5)
    np.testing.assert_allclose(pool.text_activations, ref.text_activations, atol=1e-5)
    np.testing.assert_allclose(pool.caption_activations[:], ref.caption_activations[:],
                               atol=1e-5)
    for name in ("image_weight", "image_bias", "text_weight"):
        torch.testing.assert_close(getattr(pool.head, name), getattr(ref.head, name))
    # the text side really changed: the source keeps A's
    assert not np.allclose(source.text_activations, pool.text_activations, atol=1e-3)
    assert open_pool(root / "b", model_id=b.model_id).manifest == pool.manifest
    again = rehead_pool(source, b, root / "b")  # complete: reopened, nothing rewritten
    assert again.manifest == pool.manifest


def test_rehead_refuses_another_encoder_and_foreign_folders(world):
    _, source, b, c, root = world
    with pytest.raises(PoolError, match="does not share the image encoder"):
        rehead_pool(source, c, root / "c")
    assert not (root / "c").exists()
    (root / "busy").mkdir()
    (root / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(PoolError, match="not empty"):
        rehead_pool(source, b, root / "busy")
    assert (root / "busy" / "notes.txt").read_text() == "mine"
