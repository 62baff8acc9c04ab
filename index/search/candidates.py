"""Stage 1 of a query: candidates from the lexical and dense channels, as a feature matrix."""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np

from diffagent.index.search.dense import DenseChannel
from diffagent.index.search.fusion import candidate_features
from diffagent.index.search.lexical import LexicalIndex
from diffagent.index.search.table import CardTable

# Candidates each channel contributes (at least this many, else 5 x k).
MIN_CANDIDATES = 50


def candidate_count(k: int) -> int:
    """How many candidates each channel contributes for a top-k query."""
    return max(MIN_CANDIDATES, 5 * k)


@dataclass(frozen=True)
class Candidates:
    """The candidates of one query, lexical ones first, then dense-only ones."""

    ids: np.ndarray
    """Version id of each candidate."""
    features: np.ndarray
    """(n, len(FEATURES)) normalised features, in fusion.FEATURES order."""
    lexical: np.ndarray
    """Raw BM25 score of each candidate."""
    cosine: np.ndarray
    """Cosine similarity to the prompt; NaN where the dense channel did not return it."""

    def __len__(self) -> int:
        return int(len(self.ids))


class CandidateGenerator:
    """Pools both channels' top candidates of a prompt and computes their features."""

    def __init__(self, lexical: LexicalIndex, dense: DenseChannel, table: CardTable) -> None:
        self.lexical = lexical
        self.dense = dense
        self.table = table

    def generate(
        self,
        text: str,
        k: int,
        *,
        vector: np.ndarray | None = None,
        pending: Future[np.ndarray] | None = None,
        base_model: str | None = None,
        model_type: str | None = None,
    ) -> Candidates:
        """Both channels' top candidates of `text` among the cards the filters allow.

        The dense channel uses `vector`, the prompt's embedding, or waits for `pending` (the
        embedding being computed in another thread while BM25 scores); it is skipped when both
        are None. Filters are canonical spellings (see filters.checked_query_args).
        """
        n = candidate_count(k)
        mask = self.table.mask(base_model, model_type)
        lex_all, model_all, lex_rows = self._lexical_candidates(text, n, mask)
        if pending is not None:
            vector = pending.result()
        dense = (
            {}
            if vector is None
            else self.dense.top(
                vector, n, mask, self.table.row, base_model=base_model, model_type=model_type
            )
        )
        rows = [int(r) for r in lex_rows]
        seen = set(int(i) for i in self.table.ids[lex_rows])
        rows += [self.table.row[i] for i in dense if i not in seen and i in self.table.row]
        row_arr = np.asarray(rows, dtype=np.int64)
        ids = self.table.ids[row_arr] if len(row_arr) else np.zeros(0, dtype=np.int64)
        lex = lex_all[row_arr] if len(row_arr) else np.zeros(0, dtype=np.float32)
        model = model_all[row_arr] if len(row_arr) else np.zeros(0, dtype=np.float32)
        cos = np.array([dense.get(int(i), np.nan) for i in ids], dtype=np.float32)
        pop = self.table.popularity[row_arr] if len(row_arr) else np.zeros(0, dtype=np.float32)
        top = float(lex_all.max(initial=0.0))
        features = candidate_features(lex, cos, pop, model, lexical_max=top)
        return Candidates(ids=ids, features=features, lexical=lex, cosine=cos)

    def _lexical_candidates(
        self, text: str, n: int, mask: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """BM25 of every allowed card, its model's best BM25, and the top lexical rows.

        The rows are the top n by BM25 and the top n by BM25 + model BM25, so that the sibling
        versions of a well-matched model are candidates too.
        """
        lex_all = np.where(mask, self.lexical.scores(text), 0.0).astype(np.float32)
        model_all = self.table.model_max(lex_all)
        joint = lex_all + model_all  # > 0 for every card of a model with a match
        rows: np.ndarray = np.zeros(0, dtype=np.int64)
        positive = int((joint > 0).sum())
        if positive:
            take = min(n, positive)
            by_lex = np.argpartition(-lex_all, take - 1)[:take]
            by_model = np.argpartition(-joint, take - 1)[:take]
            rows = np.unique(np.r_[by_lex, by_model])
            rows = rows[joint[rows] > 0]
        return lex_all, model_all, rows
