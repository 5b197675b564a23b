"""Feature pools: encoder outputs computed once per dataset and model, memory-mapped on disk."""

from activevlm.pool.embed import embed_dataset
from activevlm.pool.embeddings import image_embedding_shards
from activevlm.pool.layout import PoolError
from activevlm.pool.ray_embed import embed_dataset_ray
from activevlm.pool.rows import RowView
from activevlm.pool.sharded import ShardedArray
from activevlm.pool.store import Pool, open_pool

__all__ = ["Pool", "PoolError", "RowView", "ShardedArray", "embed_dataset",
           "embed_dataset_ray", "image_embedding_shards", "open_pool"]
