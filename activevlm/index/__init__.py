"""FAISS index over pool embeddings: k-NN targeting, exclusions, near-duplicate queries."""

from activevlm.index.embedding_index import (
    DEFAULT_IVF_THRESHOLD,
    EmbeddingIndex,
    StaleIndexError,
    default_nlist,
    gpu_available,
    ids_checksum,
)
from activevlm.index.exclusion import Exclude, exclusion_mask
from activevlm.index.ondisk import BlockFiller, fill_blocks
from activevlm.index.ray_build import ray_filler
from activevlm.index.streamed import NeighbourSearch, StreamedNeighbours
from activevlm.index.targeting import nearest_unique

__all__ = [
    "BlockFiller",
    "DEFAULT_IVF_THRESHOLD",
    "EmbeddingIndex",
    "Exclude",
    "NeighbourSearch",
    "StaleIndexError",
    "StreamedNeighbours",
    "default_nlist",
    "exclusion_mask",
    "fill_blocks",
    "gpu_available",
    "ids_checksum",
    "nearest_unique",
    "ray_filler",
]
