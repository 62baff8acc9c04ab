"""The search side: dense channel (Chroma), lexical channel (BM25), fusion and ranking, names."""

from diffagent.index.search.catalog_index import (
    BuildReport,
    CatalogIndex,
    SearchHit,
    default_index_dir,
    dense_document,
    lexical_document,
    load_pairs,
    normalize_filter,
    train_prompts,
)

__all__ = [
    "BuildReport",
    "CatalogIndex",
    "SearchHit",
    "default_index_dir",
    "dense_document",
    "lexical_document",
    "load_pairs",
    "normalize_filter",
    "train_prompts",
]
