"""Stage 1 of the ranked search: the top cards by BM25 plus TF-IDF over each card's whole text.

The first-stage score of a card is BM25 over its whole document (name, tags, trigger words,
collapsed prompt evidence) divided by the best BM25, plus half its TF-IDF cosine divided by the
best cosine. The candidates are the top N by that score plus the cards of the best-matching single
evidence prompts (a prompt seen before points straight at its card).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from diffagent.index.search.evidence_index import EvidenceIndex, LeaveOneOut
from diffagent.index.search.term_fields import tfidf_query, tfidf_rows

FIRST_STAGE_CANDIDATES = 100
PROMPT_NEIGHBOURS = 20
TFIDF_WEIGHT = 0.5


@dataclass
class QueryState:
    """What stage 1 computed for one query, reused by the features."""

    columns: np.ndarray
    query_tfidf: np.ndarray
    bm25_all: np.ndarray
    tfidf: np.ndarray
    score: np.ndarray
    """First-stage score of every card (-inf where the filters exclude it)."""
    prompt_max: np.ndarray
    """Per card: the best TF-IDF cosine between the query and one of its evidence prompts."""
    model_prompt_max: np.ndarray
    loo: LeaveOneOut | None = None
    extra: dict[str, np.ndarray] = field(default_factory=dict)


def first_stage(
    index: EvidenceIndex,
    text: str,
    *,
    n: int = FIRST_STAGE_CANDIDATES,
    allowed: np.ndarray | None = None,
    loo: LeaveOneOut | None = None,
) -> tuple[np.ndarray, QueryState]:
    """Candidate card rows (best first) and the query state; `allowed` masks the filters."""
    columns, counts = index.vocabulary.query(text)
    query = tfidf_query(columns, counts, index.idf)
    field_all = index.fields["all"]
    bm25 = field_all.scores(columns) if len(columns) else np.zeros(len(index.cards))
    tfidf = index.tfidf[:, columns] @ query if len(columns) else np.zeros(len(index.cards))
    if loo is not None and len(columns):
        bm25[loo.card] = field_all.replacement_weights(loo.all_counts, columns).sum()
        row = tfidf_rows(loo.all_counts, index.idf)
        tfidf[loo.card] = float((row[:, columns] @ query)[0])
    score = bm25 / max(float(bm25.max(initial=0.0)), 1e-9)
    score = score + TFIDF_WEIGHT * tfidf / max(float(tfidf.max(initial=0.0)), 1e-9)
    if allowed is not None:
        score = np.where(allowed, score, -np.inf)
    prompt_max = _prompt_max(index, columns, query, loo)
    if allowed is not None:
        prompt_max = np.where(allowed, prompt_max, 0.0)
    usable = int(np.isfinite(score).sum())
    take = min(n, usable)
    rows = np.zeros(0, np.int64)
    if take:
        rows = np.argpartition(-score, take - 1)[:take]
        rows = rows[np.argsort(-score[rows], kind="stable")]
    if PROMPT_NEIGHBOURS and len(prompt_max) > PROMPT_NEIGHBOURS:
        near = np.argpartition(-prompt_max, PROMPT_NEIGHBOURS)[:PROMPT_NEIGHBOURS]
        near = near[np.argsort(-prompt_max[near])]
        have = set(rows.tolist())
        more = [r for r in near if r not in have and prompt_max[r] > 0]
        rows = np.concatenate([rows, np.asarray(more, np.int64)])
    model_prompt_max = np.zeros(index.n_models)
    np.maximum.at(model_prompt_max, index.model_of, prompt_max)
    state = QueryState(
        columns=columns,
        query_tfidf=query,
        bm25_all=bm25,
        tfidf=tfidf,
        score=score,
        prompt_max=prompt_max,
        model_prompt_max=model_prompt_max,
        loo=loo,
    )
    return rows.astype(np.int64), state


def _prompt_max(
    index: EvidenceIndex, columns: np.ndarray, query: np.ndarray, loo: LeaveOneOut | None
) -> np.ndarray:
    """Per card: the best cosine between the query and one of its evidence prompts."""
    best = np.zeros(len(index.cards))
    if not len(columns):
        return best
    cosines = index.evidence_tfidf[:, columns] @ query
    if loo is not None:
        cosines = np.where(index.evidence_owner == loo.card, 0.0, cosines)
    np.maximum.at(best, index.evidence_owner, cosines)
    if loo is not None and len(loo.prompt_rows):
        own = index.prompt_tfidf[loo.prompt_rows][:, columns] @ query
        best[loo.card] = float(own.max())
    return best
