"""Nearest cards by name: character n-gram TF-IDF over display names, then embedding similarity."""

from __future__ import annotations

from typing import Any

import numpy as np

from diffagent.index.catalog import Catalog
from diffagent.index.search.candidates import candidate_count
from diffagent.index.search.dense import DenseChannel
from diffagent.index.search.hits import SearchHit
from diffagent.index.search.table import CardTable

# Weights of the name similarity and of the embedding similarity in the score.
NAME_WEIGHT = 0.8
EMBEDDING_WEIGHT = 0.2


class NameSearch:
    """Repairs misspelled or invented model names; the TF-IDF is built on first use."""

    def __init__(self, catalog: Catalog, dense: DenseChannel) -> None:
        self.catalog = catalog
        self.dense = dense
        self._index: tuple[Any, Any, np.ndarray] | None = None

    def _names(self) -> tuple[Any, Any, np.ndarray]:
        """Vectorizer, TF-IDF matrix of display names, and the version id of each matrix row."""
        if self._index is None:
            from sklearn.feature_extraction.text import TfidfVectorizer

            cards = list(self.catalog)
            ids = np.array([card.version_id for card in cards], dtype=np.int64)
            vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), lowercase=True)
            names = [card.display_name for card in cards]
            matrix = vectorizer.fit_transform(names) if names else None
            self._index = (vectorizer, matrix, ids)
        return self._index

    def search(self, name: str, k: int, table: CardTable, mask: np.ndarray) -> list[SearchHit]:
        """The k cards allowed by `mask` (over `table` rows) whose name is closest to `name`.

        `lexical_score` is the name similarity, `dense_score` the cosine between the name's
        embedding and the card's stored one.
        """
        vectorizer, matrix, ids = self._names()
        if not len(ids) or not name.strip():
            return []
        sims = (matrix @ vectorizer.transform([name]).T).toarray().ravel()
        rows = [table.row.get(int(i), -1) for i in ids]
        allowed = np.array([r >= 0 and bool(mask[r]) for r in rows], dtype=bool)
        sims = np.where(allowed, sims, -1.0)
        take = min(candidate_count(k), int(allowed.sum()))
        if take == 0:
            return []
        top = np.argpartition(-sims, take - 1)[:take]
        top = top[sims[top] >= 0]
        vectors = self.dense.embeddings([int(ids[i]) for i in top])
        query = self.dense.embedding_function.embed_queries([name])[0]
        cos = np.array(
            [
                float(np.dot(vectors[int(ids[i])], query)) if int(ids[i]) in vectors else 0.0
                for i in top
            ]
        )
        score = NAME_WEIGHT * sims[top] + EMBEDDING_WEIGHT * cos
        order = np.lexsort((ids[top], -score))[:k]
        hits = []
        for j in order:
            card = self.catalog.get(int(ids[top[j]]))
            if card is not None:
                hits.append(
                    SearchHit(
                        card=card,
                        score=float(score[j]),
                        lexical_score=float(sims[top[j]]),
                        dense_score=float(cos[j]),
                    )
                )
        return hits
