"""Benchmark views of an open index: each channel alone, queries with a precomputed embedding."""

from __future__ import annotations

import numpy as np

from diffagent.index.search.catalog_index import CatalogIndex
from diffagent.index.search.filters import checked_query_args
from diffagent.index.search.hits import SearchHit


def query_with_vector(
    index: CatalogIndex,
    text: str,
    vector: np.ndarray,
    k: int = 10,
    *,
    base_model: str | None = None,
    model_type: str | None = None,
) -> list[SearchHit]:
    """`index.query` with the prompt's embedding already computed (batch evaluation)."""
    base_model, model_type = checked_query_args(k, base_model, model_type)
    candidates = index.candidates(
        text, k, vector=vector, base_model=base_model, model_type=model_type
    )
    return index.rank(candidates, k)


def dense_only(index: CatalogIndex, vector: np.ndarray, k: int = 10) -> list[int]:
    """Version ids by the dense channel alone, for an embedded prompt."""
    return index.dense.nearest(vector, min(k, len(index.lexical)))


def lexical_only(index: CatalogIndex, text: str, k: int = 10) -> list[int]:
    """Version ids by the BM25 channel alone."""
    lexical = index.lexical
    scores = lexical.scores(text)
    order = np.lexsort((lexical.ids, -scores))[:k]
    return [int(lexical.ids[i]) for i in order if scores[i] > 0]
