"""The search side: dense channel (Chroma), lexical channel (BM25), fusion and ranking, names."""

from diffagent.index.search.build import BuildReport, build_index
from diffagent.index.search.candidates import Candidates
from diffagent.index.search.catalog_index import CatalogIndex
from diffagent.index.search.documents import (
    dense_document,
    lexical_document,
    load_pairs,
    train_prompts,
)
from diffagent.index.search.filters import normalize_filter
from diffagent.index.search.hits import SearchHit
from diffagent.index.search.layout import (
    CHROMA_DIR,
    FUSION_FILE,
    LEXICAL_DIR,
    MANIFEST_FILE,
    IndexManifest,
    default_index_dir,
)

__all__ = [
    "CHROMA_DIR",
    "FUSION_FILE",
    "LEXICAL_DIR",
    "MANIFEST_FILE",
    "BuildReport",
    "Candidates",
    "CatalogIndex",
    "IndexManifest",
    "SearchHit",
    "build_index",
    "default_index_dir",
    "dense_document",
    "lexical_document",
    "load_pairs",
    "normalize_filter",
    "train_prompts",
]
