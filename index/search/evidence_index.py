"""The ranking index: every card's fields and prompt evidence as sparse term matrices.

Built in memory from the catalog and its evidence (a few seconds for 10k cards). For training,
`leave_one_out` rebuilds one card's evidence without the query's own image, so the ranker learns
under the same conditions it is tested in.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import scipy.sparse as sp

from diffagent.cards import ModelCard
from diffagent.index.search.evidence import collapse_near_duplicates
from diffagent.index.search.lexical import tokenize
from diffagent.index.search.term_fields import (
    BM25Field,
    Vocabulary,
    smooth_idf,
    tfidf_rows,
    with_width,
)

Evidence = dict[int, list[tuple[int, str]]]
"""Version id -> [(image id, prompt)]."""

META_FEATURES = (
    "log_downloads",
    "log_model_downloads",
    "rating",
    "log_rating_count",
    "age_days",
    "is_lora",
    "n_evidence",
    "n_versions",
    "version_recency_rank",
    "n_triggers",
)
# The crawl's date: ages are counted back from it.
CRAWL_DATE = datetime(2023, 7, 5).timestamp()


@dataclass
class LeaveOneOut:
    """One card's evidence rebuilt without the query's own image (training only)."""

    card: int
    evidence_counts: sp.csr_matrix
    all_counts: sp.csr_matrix
    model_counts: sp.csr_matrix
    prompt_rows: np.ndarray


@dataclass
class EvidenceIndex:
    """Per-card BM25 fields, TF-IDF rows, prompt-level matrices and metadata features."""

    cards: list[ModelCard]
    vocabulary: Vocabulary
    fields: dict[str, BM25Field]
    """evidence, all, name, tags, triggers (rows = cards) and model (rows = models)."""
    tfidf: sp.csc_matrix
    idf: np.ndarray
    model_of: np.ndarray
    """Card row -> model row."""
    n_models: int
    meta: np.ndarray
    prompt_counts: sp.csr_matrix
    """Term counts of every pool prompt (rows)."""
    prompt_binary: sp.csr_matrix
    prompt_lengths: np.ndarray
    prompt_tfidf: sp.csr_matrix
    evidence_ptr: np.ndarray
    """Card row -> its slice of `evidence_rows` (CSR-style)."""
    evidence_rows: np.ndarray
    evidence_owner: np.ndarray
    evidence_tfidf: sp.csc_matrix
    static_counts: sp.csr_matrix
    trigger_phrases: list[list[str]]
    pool: Evidence
    prompt_row: dict[str, int]
    prompt_vectors: np.ndarray | None = None
    """Unit MiniLM embedding of every pool prompt (dense features), when computed."""
    card_vectors: np.ndarray | None = None
    """Per card: the unit mean of its evidence prompts' embeddings (zero without evidence)."""

    @classmethod
    def build(
        cls,
        cards: list[ModelCard],
        evidence: Evidence,
        pool: Evidence,
        vectors: Callable[[list[str]], np.ndarray] | None = None,
    ) -> EvidenceIndex:
        """Index `cards` with their collapsed `evidence`; `pool` is the uncollapsed evidence.

        `vectors` embeds the pool prompts (in order) for the dense features; None leaves them out.
        """
        vocabulary = Vocabulary()
        texts = sorted({prompt for items in pool.values() for _, prompt in items})
        prompt_row = {text: row for row, text in enumerate(texts)}
        prompt_counts = vocabulary.count_rows(texts)
        name = vocabulary.count_rows([c.display_name for c in cards])
        tags = vocabulary.count_rows([" , ".join(c.tags) for c in cards])
        triggers = vocabulary.count_rows([" , ".join(c.trigger_words) for c in cards])
        width = len(vocabulary)
        prompt_counts, name, tags, triggers = (
            with_width(m, width) for m in (prompt_counts, name, tags, triggers)
        )
        ptr: list[int] = [0]
        rows: list[int] = []
        for card in cards:
            rows.extend(prompt_row[p] for _, p in evidence.get(card.version_id, []))
            ptr.append(len(rows))
        evidence_ptr, evidence_rows = np.asarray(ptr), np.asarray(rows, np.int64)
        n = len(cards)
        owner = np.repeat(np.arange(n), np.diff(evidence_ptr))
        gather = sp.csr_matrix(
            (np.ones(len(evidence_rows), np.float32), (owner, evidence_rows)),
            shape=(n, len(texts)),
        )
        evidence_counts = (gather @ prompt_counts).tocsr()
        static = (name + tags + triggers).tocsr()
        all_counts = (evidence_counts + static).tocsr()
        model_ids = sorted({c.model_id for c in cards})
        model_row = {model_id: row for row, model_id in enumerate(model_ids)}
        model_of = np.asarray([model_row[c.model_id] for c in cards], np.int64)
        by_model = sp.csr_matrix(
            (np.ones(n, np.float32), (model_of, np.arange(n))), shape=(len(model_ids), n)
        )
        fields = {
            "evidence": BM25Field.build(evidence_counts),
            "all": BM25Field.build(all_counts),
            "name": BM25Field.build(name),
            "tags": BM25Field.build(tags),
            "triggers": BM25Field.build(triggers),
            "model": BM25Field.build((by_model @ all_counts).tocsr()),
        }
        idf = smooth_idf(all_counts)
        prompt_tfidf = tfidf_rows(prompt_counts, idf)
        binary = prompt_counts.copy()
        binary.data[:] = 1
        return cls(
            cards=cards,
            vocabulary=vocabulary,
            fields=fields,
            tfidf=tfidf_rows(all_counts, idf).tocsc(),
            idf=idf,
            model_of=model_of,
            n_models=len(model_ids),
            meta=_meta(cards, model_of, np.diff(evidence_ptr)),
            prompt_counts=prompt_counts,
            prompt_binary=binary.tocsr(),
            prompt_lengths=np.asarray(binary.sum(1)).ravel(),
            prompt_tfidf=prompt_tfidf,
            evidence_ptr=evidence_ptr,
            evidence_rows=evidence_rows,
            evidence_owner=owner,
            evidence_tfidf=prompt_tfidf[evidence_rows].tocsc(),
            static_counts=static,
            trigger_phrases=[
                [" ".join(tokenize(t)) for t in c.trigger_words if tokenize(t)] for c in cards
            ],
            pool=pool,
            prompt_row=prompt_row,
            prompt_vectors=None if vectors is None else vectors(texts),
        ).with_card_vectors()

    def with_card_vectors(self) -> EvidenceIndex:
        """Set `card_vectors` from `prompt_vectors` (no-op without them)."""
        if self.prompt_vectors is None:
            return self
        sums = np.zeros((len(self.cards), self.prompt_vectors.shape[1]), np.float32)
        np.add.at(sums, self.evidence_owner, self.prompt_vectors[self.evidence_rows])
        norms = np.linalg.norm(sums, axis=1, keepdims=True)
        self.card_vectors = sums / np.maximum(norms, 1e-9)
        return self

    def card_rows(self, card: int, loo: LeaveOneOut | None = None) -> np.ndarray:
        """The pool rows of a card's evidence prompts (its leave-one-out rows when given)."""
        if loo is not None and card == loo.card:
            return loo.prompt_rows
        return self.evidence_rows[self.evidence_ptr[card] : self.evidence_ptr[card + 1]]

    def leave_one_out(self, card: int, image_id: int) -> LeaveOneOut | None:
        """The card's evidence without `image_id` (None when the image is not in its pool)."""
        items = self.pool.get(self.cards[card].version_id, [])
        if not any(i == image_id for i, _ in items):
            return None
        kept = collapse_near_duplicates([(i, p) for i, p in items if i != image_id])
        rows = np.asarray([self.prompt_row[p] for _, p in kept], np.int64)
        width = len(self.vocabulary)
        evidence = (
            sp.csr_matrix(self.prompt_counts[rows].sum(0))
            if len(rows)
            else sp.csr_matrix((1, width), dtype=np.float32)
        )
        all_counts = (evidence + self.static_counts[card]).tocsr()
        old = self.fields["all"].counts[card]
        model = self.fields["model"].counts[self.model_of[card]] - old + all_counts
        return LeaveOneOut(card, evidence.tocsr(), all_counts, model.tocsr(), rows)


def _meta(cards: list[ModelCard], model_of: np.ndarray, n_evidence: np.ndarray) -> np.ndarray:
    """Per card: popularity, rating, age, type, evidence count, versions, recency among them."""
    meta = np.zeros((len(cards), len(META_FEATURES)), np.float32)
    created = np.asarray([_timestamp(c.created_at) for c in cards])
    for row, card in enumerate(cards):
        stats = card.stats
        meta[row, :4] = [
            math.log1p(stats.downloads),
            math.log1p(stats.model_downloads),
            stats.rating,
            math.log1p(stats.rating_count),
        ]
        meta[row, 4] = (CRAWL_DATE - created[row]) / 86400 if created[row] else -1
        meta[row, 5] = card.type == "LORA"
        meta[row, 9] = len(card.trigger_words)
    meta[:, 6] = n_evidence
    meta[:, 7] = np.bincount(model_of)[model_of] if len(model_of) else 0
    order = np.lexsort((-created, model_of))  # by model, newest first
    previous, rank = -1, 0
    for row in order:
        rank = rank + 1 if model_of[row] == previous else 0
        previous = model_of[row]
        meta[row, 8] = rank
    return meta


def _timestamp(value: str | None) -> float:
    if not value:
        return 0.0
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return 0.0
    return parsed.replace(tzinfo=None).timestamp()
