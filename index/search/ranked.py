"""Ranked search over a catalog with prompt evidence: evidence first stage, then the ranker.

`RankedSearch.open` builds the in-memory evidence index of a catalog (its evidence minus the
images of an excluded split, for evaluation indexes) and loads the trained ranker of the index
folder; `train_if_stale` (re)trains that ranker when the catalog, its evidence or the training
set-up changed.
"""

from __future__ import annotations

import hashlib
import json
import logging
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from diffagent.index.catalog import EVIDENCE_FILE, Catalog, iter_evidence
from diffagent.index.search.evidence import collapse_near_duplicates, split_image_ids
from diffagent.index.search.evidence_index import Evidence, EvidenceIndex
from diffagent.index.search.features import FEATURE_GROUPS, FEATURES, compute_features
from diffagent.index.search.first_stage import first_stage
from diffagent.index.search.prompt_vectors import prompt_vectors
from diffagent.index.search.ranker import RANKER_INFO_FILE, Ranker, RankerConfig, fit_ranker

log = logging.getLogger(__name__)

RANKER_DIR = "ranker"
RANKER_FORMAT = 3  # 3: split queries' whitespace normalised as evidence prompts are


@dataclass(frozen=True)
class RankedHit:
    """One ranked card: its version id, score and first-stage BM25."""

    version_id: int
    score: float
    bm25: float


class RankedSearch:
    """The evidence index of one catalog and its ranker (None until one is trained)."""

    def __init__(self, index: EvidenceIndex, ranker: Ranker | None, digest: str) -> None:
        self.index = index
        self.ranker = ranker
        self.digest = digest
        self._base = np.asarray([card.base_model for card in index.cards], dtype=object)
        self._type = np.asarray([card.type for card in index.cards], dtype=object)

    @classmethod
    def open(
        cls,
        catalog: Catalog,
        index_dir: Path,
        exclude_split: str | None = None,
        *,
        show_progress: bool = True,
    ) -> RankedSearch | None:
        """The ranked search of a catalog with evidence (None when it has none).

        The first open embeds every evidence prompt (minutes for the full crawl, with a progress
        bar); later opens read the cached vectors.
        """
        if not (catalog.directory / EVIDENCE_FILE).is_file():
            return None
        excluded = (
            split_image_ids(catalog.directory, exclude_split) if exclude_split else frozenset()
        )
        pool: Evidence = {}
        for version_id, prompts in iter_evidence(catalog.directory):
            if catalog.get(version_id) is not None:
                pool[version_id] = sorted((i, p) for i, p in prompts if i not in excluded)
        evidence = {
            version_id: collapse_near_duplicates(items) for version_id, items in pool.items()
        }
        cards = sorted(catalog, key=lambda card: card.version_id)
        digest = _digest(cards, pool, exclude_split)
        ranker_dir = Path(index_dir) / RANKER_DIR
        ranker = Ranker.load(ranker_dir) if _info(ranker_dir).get("digest") == digest else None

        def vectors(texts: list[str]) -> np.ndarray:
            return prompt_vectors(texts, Path(index_dir), show_progress=show_progress)

        return cls(EvidenceIndex.build(cards, evidence, pool, vectors), ranker, digest)

    def train_if_stale(
        self,
        catalog: Catalog,
        index_dir: Path,
        config: RankerConfig | None = None,
        *,
        show_progress: bool = True,
    ) -> dict[str, Any] | None:
        """Train and save the ranker unless an up-to-date one is loaded; the training facts."""
        config = config or RankerConfig()
        digest = hashlib.sha256(
            f"{self.digest}:{config.model_dump_json()}:{FEATURES}".encode()
        ).hexdigest()
        ranker_dir = Path(index_dir) / RANKER_DIR
        if self.ranker is not None and _info(ranker_dir).get("config_digest") == digest:
            return None
        train, val = training_queries(self.index, catalog)
        if len(train) < 10 or len(val) < 10:
            log.info("too little evidence to train a ranker (%d queries)", len(train))
            return None
        ranker, info = fit_ranker(self.index, train, val, config, show_progress=show_progress)
        info = {**info, "format": RANKER_FORMAT, "digest": self.digest, "config_digest": digest}
        ranker.save(ranker_dir, info)
        self.ranker = ranker
        return info

    @property
    def uses_dense(self) -> bool:
        """Whether the ranker reads dense features (the query must then be embedded)."""
        return self.ranker is not None and any(
            name in self.ranker.features for name in FEATURE_GROUPS["dense"]
        )

    def search(
        self,
        text: str,
        k: int,
        *,
        base_model: str | None,
        model_type: str | None,
        vector: np.ndarray | None = None,
        pending: Future[np.ndarray] | None = None,
    ) -> list[RankedHit]:
        """Top-k cards: first-stage candidates scored by the ranker (by first stage without one)."""
        allowed = np.ones(len(self.index.cards), dtype=bool)
        if base_model:
            allowed &= self._base == base_model
        if model_type:
            allowed &= self._type == model_type
        rows, state = first_stage(self.index, text, allowed=allowed)
        rows = rows[allowed[rows]]
        if not len(rows):
            return []
        if self.ranker is None:
            scores = state.score[rows]
        else:
            if pending is not None:
                vector = pending.result()  # computed while the first stage ran
            features = compute_features(self.index, text, rows, state, vector)
            scores = self.ranker.score(features)
        order = np.argsort(-scores, kind="stable")[:k]
        return [
            RankedHit(
                version_id=self.index.cards[rows[i]].version_id,
                score=float(scores[i]),
                bm25=float(state.bm25_all[rows[i]]),
            )
            for i in order
        ]


def training_queries(
    index: EvidenceIndex, catalog: Catalog
) -> tuple[list[tuple[str, int, int]], list[tuple[str, int, int]]]:
    """(prompt, version id, image id) train and early-stopping queries.

    With pairs, the train and val pairs (the prompts people write to get an image: measured
    better than training on every evidence prompt, 0.784 against 0.777 test model top-1);
    without, every evidence prompt, a seeded tenth held out. Each query's own image is left out
    of its card's evidence when features are computed.
    """
    train, val = split_queries(catalog, "train"), split_queries(catalog, "val")
    if len(train) >= 10 and len(val) >= 10:
        return train, val
    queries = [
        (prompt, version_id, image_id)
        for version_id, items in sorted(index.pool.items())
        for image_id, prompt in items
    ]
    return [q for n, q in enumerate(queries) if n % 10], queries[::10]


def split_queries(catalog: Catalog, split: str) -> list[tuple[str, int, int]]:
    """(prompt, version id, image id) of a split's pairs with a card; whitespace collapsed."""
    path = catalog.directory / "pairs" / f"{split}.jsonl"
    rows: list[tuple[str, int, int]] = []
    if not path.is_file():
        return rows
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if not line.strip():
                continue
            row = json.loads(line)
            version_id = row.get("api", {}).get("version_id")
            # Evidence prompts have their whitespace collapsed; a pair's prompt must match its
            # evidence twin, or a training query would miss its stored embedding and learn
            # from dense features of 0 that no real query has.
            prompt = " ".join(str(row.get("instruction", {}).get("prompt", "")).split())
            if version_id is None or not prompt or row.get("image_id") is None:
                continue
            if catalog.get(int(version_id)) is not None:
                rows.append((prompt, int(version_id), int(row["image_id"])))
    return rows


def _digest(cards: list[Any], pool: Evidence, exclude_split: str | None) -> str:
    sha = hashlib.sha256(f"{RANKER_FORMAT}:{exclude_split}".encode())
    for card in cards:
        sha.update(f"{card.version_id}:{card.model_id}:{card.display_name}\0".encode())
        for image_id, prompt in pool.get(card.version_id, []):
            sha.update(f"{image_id}:{prompt}\0".encode())
    return sha.hexdigest()


def _info(ranker_dir: Path) -> dict[str, Any]:
    path = ranker_dir / RANKER_INFO_FILE
    if not path.is_file():
        return {}
    return dict(json.loads(path.read_text(encoding="utf-8")))
