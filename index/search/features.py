"""Features of each (query, candidate card) pair for the learned ranker, in named groups."""

from __future__ import annotations

import numpy as np

from diffagent.index.search.evidence_index import META_FEATURES, EvidenceIndex
from diffagent.index.search.first_stage import QueryState
from diffagent.index.search.lexical import tokenize

FEATURE_GROUPS: dict[str, tuple[str, ...]] = {
    "first_stage": ("fs_score", "fs_rank", "bm25_all", "tfidf_cosine"),
    "evidence_bm25": ("bm25_evidence", "evidence_match_share", "bm25_evidence_max_term"),
    "fields": ("bm25_name", "bm25_tags", "bm25_triggers", "name_cover", "tags_matched"),
    "trigger_phrase": ("trigger_hit", "trigger_share"),
    "prompt_level": (
        "max_jaccard",
        "exact_prompt",
        "n_jaccard_half",
        "prompt_max",
        "model_prompt_max",
        "prompt_max_rank",
    ),
    "model_aggregates": (
        "bm25_model",
        "model_max_fs",
        "model_rank_fs",
        "sibling_candidates",
        "model_max_jaccard",
        "is_model_best_fs",
    ),
    "dense": ("cosine_max", "cosine_mean", "model_max_cosine"),
    "meta": META_FEATURES,
    "query": ("query_terms",),
}
FEATURES: tuple[str, ...] = tuple(name for group in FEATURE_GROUPS.values() for name in group)
_COLUMN = {name: column for column, name in enumerate(FEATURES)}


def compute_features(
    index: EvidenceIndex,
    text: str,
    rows: np.ndarray,
    state: QueryState,
    vector: np.ndarray | None = None,
) -> np.ndarray:
    """(len(rows), len(FEATURES)) features of a query's candidate cards.

    `vector` is the query's unit MiniLM embedding; without it (or without prompt vectors in the
    index) the dense features are 0.
    """
    out = np.zeros((len(rows), len(FEATURES)), np.float32)

    def put(name: str, values: np.ndarray | float) -> None:
        out[:, _COLUMN[name]] = values

    n_terms = max(len(state.columns), 1)
    put("fs_score", np.where(np.isfinite(state.score[rows]), state.score[rows], 0.0))
    put("fs_rank", _capped_rank(state.score, rows, 128))
    put("bm25_all", state.bm25_all[rows])
    put("tfidf_cosine", state.tfidf[rows])
    loo = state.loo
    evidence = _field_weights(index, "evidence", rows, state, loo.evidence_counts if loo else None)
    put("bm25_evidence", evidence.sum(1))
    put("evidence_match_share", (evidence > 0).sum(1) / n_terms)
    put("bm25_evidence_max_term", evidence.max(1) if evidence.shape[1] else 0.0)
    name = _field_weights(index, "name", rows, state)
    put("bm25_name", name.sum(1))
    put("name_cover", (name > 0).sum(1) / np.maximum(index.fields["name"].lengths[rows], 1))
    tags = _field_weights(index, "tags", rows, state)
    put("bm25_tags", tags.sum(1))
    put("tags_matched", (tags > 0).sum(1))
    put("bm25_triggers", _field_weights(index, "triggers", rows, state).sum(1))
    _trigger_features(index, text, rows, out)
    _prompt_features(index, rows, state, out)
    _model_features(index, rows, state, out)
    if vector is not None and index.prompt_vectors is not None:
        _dense_features(index, rows, state, vector, out)
    out[:, [_COLUMN[name] for name in META_FEATURES]] = index.meta[rows]
    if loo is not None:
        hit = np.flatnonzero(rows == loo.card)
        if len(hit):
            out[hit[0], _COLUMN["n_evidence"]] = len(loo.prompt_rows)
    put("query_terms", len(state.columns))
    return out


def _field_weights(
    index: EvidenceIndex,
    name: str,
    rows: np.ndarray,
    state: QueryState,
    replacement: object = None,
) -> np.ndarray:
    """BM25 weights of the query terms in a field of the candidates (leave-one-out row swapped)."""
    field = index.fields[name]
    if not len(state.columns):
        return np.zeros((len(rows), 0), np.float32)
    weights = field.candidate_weights(rows, state.columns)
    if state.loo is not None and replacement is not None:
        hit = np.flatnonzero(rows == state.loo.card)
        if len(hit):
            weights[hit[0]] = field.replacement_weights(replacement, state.columns)  # type: ignore[arg-type]
    return weights


def _trigger_features(index: EvidenceIndex, text: str, rows: np.ndarray, out: np.ndarray) -> None:
    """Whether (and which share of) a card's trigger phrases appear in the query."""
    query = " " + " ".join(tokenize(text)) + " "
    for position, row in enumerate(rows):
        phrases = index.trigger_phrases[row]
        if phrases:
            hits = sum(1 for phrase in phrases if f" {phrase} " in query)
            out[position, _COLUMN["trigger_hit"]] = hits > 0
            out[position, _COLUMN["trigger_share"]] = hits / len(phrases)


def _prompt_features(
    index: EvidenceIndex, rows: np.ndarray, state: QueryState, out: np.ndarray
) -> None:
    """Single-prompt matches: best term-set Jaccard, exact repeats, the best TF-IDF cosine."""
    per_card = [index.card_rows(int(row), state.loo) for row in rows]
    lengths = np.asarray([len(r) for r in per_card])
    if lengths.sum() and len(state.columns):
        prompt_rows = np.concatenate(per_card)
        shared = np.asarray(index.prompt_binary[prompt_rows][:, state.columns].sum(1)).ravel()
        union = index.prompt_lengths[prompt_rows] + len(state.columns) - shared
        jaccard = shared / np.maximum(union, 1)
        owner = np.repeat(np.arange(len(rows)), lengths)
        best = np.zeros(len(rows))
        np.maximum.at(best, owner, jaccard)
        out[:, _COLUMN["max_jaccard"]] = best
        out[:, _COLUMN["exact_prompt"]] = best >= 0.999
        out[:, _COLUMN["n_jaccard_half"]] = np.bincount(
            owner, weights=jaccard >= 0.5, minlength=len(rows)
        )
    out[:, _COLUMN["prompt_max"]] = state.prompt_max[rows]
    out[:, _COLUMN["model_prompt_max"]] = state.model_prompt_max[index.model_of[rows]]
    out[:, _COLUMN["prompt_max_rank"]] = _capped_rank(state.prompt_max, rows, 64)


def _model_features(
    index: EvidenceIndex, rows: np.ndarray, state: QueryState, out: np.ndarray
) -> None:
    """Model-level aggregates over sibling versions: BM25 of the whole model, best scores."""
    models = index.model_of[rows]
    field = index.fields["model"]
    if len(state.columns):
        scores = np.asarray(field.weights[:, state.columns].tocsr()[models].sum(1)).ravel()
        if state.loo is not None:
            own = index.model_of[state.loo.card]
            replaced = field.replacement_weights(state.loo.model_counts, state.columns).sum()
            scores[models == own] = replaced
        out[:, _COLUMN["bm25_model"]] = scores
    best = np.full(index.n_models, -np.inf)
    np.maximum.at(best, index.model_of, state.score)
    model_best = best[models]
    out[:, _COLUMN["model_max_fs"]] = np.where(np.isfinite(model_best), model_best, 0.0)
    out[:, _COLUMN["is_model_best_fs"]] = state.score[rows] >= model_best
    _, inverse, counts = np.unique(models, return_inverse=True, return_counts=True)
    out[:, _COLUMN["sibling_candidates"]] = counts[inverse]
    seen: dict[int, int] = {}
    for position, model in enumerate(models):  # candidates come best first
        out[position, _COLUMN["model_rank_fs"]] = seen.get(int(model), 0)
        seen[int(model)] = seen.get(int(model), 0) + 1
    group_best = np.full(len(counts), -np.inf)
    np.maximum.at(group_best, inverse, out[:, _COLUMN["max_jaccard"]])
    out[:, _COLUMN["model_max_jaccard"]] = group_best[inverse]


def _dense_features(
    index: EvidenceIndex, rows: np.ndarray, state: QueryState, vector: np.ndarray, out: np.ndarray
) -> None:
    """Cosine to the best single evidence prompt, to the card's mean, and the model's best."""
    assert index.prompt_vectors is not None and index.card_vectors is not None
    per_card = [index.card_rows(int(row), state.loo) for row in rows]
    lengths = np.asarray([len(r) for r in per_card])
    best = np.zeros(len(rows))
    if lengths.sum():
        cosines = index.prompt_vectors[np.concatenate(per_card)] @ vector
        owner = np.repeat(np.arange(len(rows)), lengths)
        best = np.full(len(rows), -1.0)
        np.maximum.at(best, owner, cosines)
        best[lengths == 0] = 0.0
    out[:, _COLUMN["cosine_max"]] = best
    mean = index.card_vectors[rows] @ vector
    if state.loo is not None:
        hit = np.flatnonzero(rows == state.loo.card)
        if len(hit):
            own = index.prompt_vectors[state.loo.prompt_rows].sum(0)
            mean[hit[0]] = float(own @ vector / max(float(np.linalg.norm(own)), 1e-9))
    out[:, _COLUMN["cosine_mean"]] = mean
    _, inverse, counts = np.unique(index.model_of[rows], return_inverse=True, return_counts=True)
    group_best = np.full(len(counts), -np.inf)
    np.maximum.at(group_best, inverse, best)
    out[:, _COLUMN["model_max_cosine"]] = group_best[inverse]


def _capped_rank(values: np.ndarray, rows: np.ndarray, cap: int) -> np.ndarray:
    """How many cards score strictly higher, capped at `cap` (a partition, not a sort)."""
    finite = np.where(np.isfinite(values), values, -1e30)
    k = min(cap, len(finite))
    if k == 0:
        return np.zeros(len(rows))
    top = np.sort(-np.partition(-finite, k - 1)[:k])
    return np.searchsorted(top, -finite[rows], side="left").astype(np.float32)
