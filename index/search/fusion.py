"""Weighted fusion of the lexical and dense channels (plus popularity and model priors), tuning."""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

FEATURES = ("lexical", "dense", "popularity", "model")
MODEL_GRID = (0.0, 0.1, 0.2, 0.3, 0.5, 0.8, 1.2, 2.0)


class FusionWeights(BaseModel):
    """Weights of the normalised channel scores; stored with the index as fusion.json."""

    model_config = ConfigDict(extra="forbid")

    # Defaults: the weights tuned on the full shared-crawl catalog's val split (docs/index.md),
    # used where a catalog has no val split (the starter catalog).
    lexical: float = Field(default=0.8, ge=0.0, description="Weight of BM25 / max BM25.")
    dense: float = Field(default=0.2, ge=0.0, description="Weight of min-max scaled cosine.")
    popularity: float = Field(default=0.0, ge=0.0, description="Weight of log-downloads prior.")
    model: float = Field(
        default=1.2,
        ge=0.0,
        description="Weight of the best normalised BM25 among the card's model's versions.",
    )
    tuned_on: int = Field(default=0, description="Validation queries the weights were tuned on.")
    source_digest: str = Field(default="", description="Digest of the index + queries tuned on.")
    recall_at_1: float | None = Field(default=None, description="Val Recall@1 at these weights.")
    mrr: float | None = Field(
        default=None, description="Val mean reciprocal rank at these weights."
    )

    def vector(self) -> np.ndarray:
        """Weights in FEATURES order."""
        return np.array([self.lexical, self.dense, self.popularity, self.model], dtype=np.float32)

    def save(self, path: Path) -> None:
        """Write as JSON."""
        path.write_text(self.model_dump_json(indent=2), encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> FusionWeights:
        """Read from JSON, or defaults when the file is missing."""
        if not path.is_file():
            return cls()
        return cls.model_validate(json.loads(path.read_text(encoding="utf-8")))


def candidate_features(
    lexical: np.ndarray,
    dense: np.ndarray,
    popularity: np.ndarray,
    model: np.ndarray | None = None,
    lexical_max: float | None = None,
) -> np.ndarray:
    """Normalised (n, 4) features of n candidates, in FEATURES order.

    `lexical` holds raw BM25 scores, `dense` cosine similarities with NaN where the dense channel
    did not return the candidate (it then gets the lowest returned similarity), `popularity`
    values already in [0, 1], `model` the highest raw BM25 among the versions of each candidate's
    model (zeros when None). Both BM25 columns are divided by `lexical_max` (default: the
    candidates' highest BM25).
    """
    lex = np.asarray(lexical, dtype=np.float32)
    top = float(lex.max(initial=0.0)) if lexical_max is None else lexical_max
    lex_norm = lex / top if top > 0 else np.zeros_like(lex)
    mod = np.zeros_like(lex) if model is None else np.asarray(model, dtype=np.float32)
    mod_norm = mod / top if top > 0 else np.zeros_like(mod)
    cos = np.asarray(dense, dtype=np.float32)
    present = ~np.isnan(cos)
    if present.any():
        low, high = float(cos[present].min()), float(cos[present].max())
        cos = np.where(present, cos, low)
        dense_norm = (cos - low) / (high - low) if high > low else np.zeros_like(cos)
    else:
        dense_norm = np.zeros_like(cos)
    return np.stack([lex_norm, dense_norm, np.asarray(popularity, np.float32), mod_norm], axis=1)


def fuse(features: np.ndarray, weights: FusionWeights) -> np.ndarray:
    """Fused score of each candidate row."""
    return features @ weights.vector()[: features.shape[1]]


@dataclass
class TuningQuery:
    """Candidates of one validation query and the row of the true card (-1 when not a candidate)."""

    features: np.ndarray
    target: int


def _ranks(queries: Sequence[TuningQuery], grid: np.ndarray) -> np.ndarray:
    """Rank (0 = top) of the true card per weight vector: (n_grid, n_queries), -1 = missed."""
    ranks = np.full((len(grid), len(queries)), -1, dtype=np.int64)
    for q, query in enumerate(queries):
        if query.target < 0:
            continue
        width = query.features.shape[1]
        scores = query.features @ grid[:, :width].T  # (n_candidates, n_grid)
        true = scores[query.target]
        # Ties count against the true card, so a weight that ignores the signal cannot win.
        ranks[:, q] = (scores >= true).sum(axis=0) - 1
    return ranks


def evaluate(queries: Sequence[TuningQuery], weights: FusionWeights) -> tuple[float, float]:
    """Recall@1 and MRR@10 of `weights` on `queries`."""
    ranks = _ranks(queries, weights.vector()[None, :])[0]
    hit = ranks >= 0
    recall = float(np.mean(hit & (ranks == 0))) if len(ranks) else 0.0
    rr = np.where(hit & (ranks < 10), 1.0 / np.maximum(ranks + 1, 1), 0.0)
    return recall, float(rr.mean()) if len(ranks) else 0.0


def tune(
    queries: Sequence[TuningQuery],
    *,
    dense_steps: int = 21,
    popularity_grid: Sequence[float] = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2),
    model_grid: Sequence[float] = MODEL_GRID,
    digest: str = "",
) -> FusionWeights:
    """Grid-search weights (lexical + dense = 1; popularity, model extra): Recall@1, then MRR."""
    if not queries:
        return FusionWeights(source_digest=digest)
    grid = np.array(
        [
            (1.0 - d, d, p, m)
            for d, p, m in itertools.product(
                np.linspace(0.0, 1.0, dense_steps), popularity_grid, model_grid
            )
        ],
        dtype=np.float32,
    )
    ranks = _ranks(queries, grid)
    hit = ranks >= 0
    recall = (hit & (ranks == 0)).mean(axis=1)
    mrr = np.where(hit & (ranks < 10), 1.0 / np.maximum(ranks + 1, 1), 0.0).mean(axis=1)
    best = int(np.lexsort((mrr, recall))[-1])
    lexical, dense, popularity, model = (round(float(x), 4) for x in grid[best])
    return FusionWeights(
        lexical=lexical,
        dense=dense,
        popularity=popularity,
        model=model,
        tuned_on=len(queries),
        source_digest=digest,
        recall_at_1=round(float(recall[best]), 4),
        mrr=round(float(mrr[best]), 4),
    )
