"""Bring an index folder up to date with a catalog: dense sync, lexical rebuild, fusion tuning."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from diffagent.index.catalog import Catalog
from diffagent.index.search.candidates import CandidateGenerator
from diffagent.index.search.dense import DenseChannel
from diffagent.index.search.documents import VAL_PAIRS, CatalogDocuments, digest, load_pairs
from diffagent.index.search.embeddings import MiniLMEmbeddingFunction
from diffagent.index.search.fusion import FEATURES, MODEL_GRID, FusionWeights, TuningQuery, tune
from diffagent.index.search.layout import (
    CHROMA_DIR,
    FUSION_FILE,
    INDEX_FORMAT,
    LEXICAL_DIR,
    IndexManifest,
)
from diffagent.index.search.lexical import LexicalIndex
from diffagent.index.search.table import CardTable

log = logging.getLogger(__name__)

TUNING_QUERIES = 400
# Candidates per channel when tuning are those of a top-10 query.
TUNING_K = 10


class BuildReport(BaseModel):
    """What one build did: all zeros and False when the index was already up to date."""

    cards: int = 0
    embedded: int = 0
    removed: int = 0
    lexical_rebuilt: bool = False
    tuned: bool = False
    seconds: float = 0.0
    ranker: dict[str, Any] | None = None
    """Training facts when the ranker was (re)trained: queries, trees, seconds."""

    @property
    def changed(self) -> bool:
        """Whether the build did any work."""
        return bool(self.embedded or self.removed or self.lexical_rebuilt or self.tuned)


def build_index(
    catalog: Catalog,
    index_dir: Path,
    embedding_function: MiniLMEmbeddingFunction,
    *,
    dense: DenseChannel | None = None,
    tune_weights: bool = True,
    show_progress: bool = True,
    exclude_split: str | None = None,
) -> BuildReport:
    """Bring `index_dir` up to date with `catalog`; does no work when nothing changed.

    `exclude_split` is recorded in the manifest of an evaluation index (see `ranked`).

    `dense` is the caller's open dense channel of `index_dir`; without one, a channel is
    opened for the build and closed after it.
    """
    start = time.perf_counter()
    index_dir = Path(index_dir)
    index_dir.mkdir(parents=True, exist_ok=True)
    own_dense = dense is None
    channel = dense or DenseChannel(index_dir / CHROMA_DIR, embedding_function)
    try:
        report = _build(
            catalog, index_dir, embedding_function, channel, tune_weights, show_progress
        )
        manifest = IndexManifest.read(index_dir)
        if manifest is not None and manifest.exclude_split != exclude_split:
            manifest.exclude_split = exclude_split
            manifest.write(index_dir)
    finally:
        if own_dense:
            channel.close()
    report.seconds = round(time.perf_counter() - start, 3)
    return report


def _build(
    catalog: Catalog,
    index_dir: Path,
    embedding_function: MiniLMEmbeddingFunction,
    dense: DenseChannel,
    tune_weights: bool,
    show_progress: bool,
) -> BuildReport:
    """The steps of `build_index`: each channel rebuilt when its digest changed, then tuning."""
    docs = CatalogDocuments.of(catalog)
    manifest = IndexManifest.read(index_dir) or IndexManifest()
    if manifest.format != INDEX_FORMAT:
        manifest = IndexManifest()
    report = BuildReport(cards=len(docs.cards))
    # A fresh Chroma server (or a wiped collection) is filled even when the manifest is current.
    if manifest.dense_digest != docs.dense_digest or dense.count() != len(docs.cards):
        report.embedded, report.removed = dense.sync(
            docs.cards, docs.dense, docs.dense_hashes, show_progress=show_progress
        )
    if manifest.lexical_digest != docs.lexical_digest or not (index_dir / LEXICAL_DIR).is_dir():
        ids = [card.version_id for card in docs.cards]
        LexicalIndex.build(ids, docs.lexical).save(index_dir / LEXICAL_DIR)
        report.lexical_rebuilt = True
    IndexManifest(
        cards=len(docs.cards),
        dense_digest=docs.dense_digest,
        lexical_digest=docs.lexical_digest,
        embedding={"name": embedding_function.name(), **embedding_function.get_config()},
    ).write(index_dir)
    if tune_weights:
        report.tuned = _maybe_tune(
            catalog, index_dir, dense, docs.dense_digest + docs.lexical_digest
        )
    return report


def _maybe_tune(catalog: Catalog, index_dir: Path, dense: DenseChannel, index_digest: str) -> bool:
    """Tune fusion weights on the catalog's val split when it or the index changed."""
    path = catalog.directory / VAL_PAIRS
    if not path.is_file():
        return False
    pairs = load_pairs(path, catalog, limit=TUNING_QUERIES)
    config = json.dumps(dense.embedding_function.get_config(), sort_keys=True)
    grid = f"features={FEATURES};model_grid={MODEL_GRID}"  # a new search space re-tunes
    source = digest([index_digest, config, grid, *(f"{p}:{v}" for p, v in pairs)])
    if FusionWeights.load(index_dir / FUSION_FILE).source_digest == source:
        return False
    lexical = LexicalIndex.load(index_dir / LEXICAL_DIR)
    generator = CandidateGenerator(lexical, dense, CardTable.build(catalog, lexical.ids))
    queries = tuning_queries(generator, pairs)
    weights = tune(queries, digest=source)
    weights.save(index_dir / FUSION_FILE)
    log.info("fusion weights tuned on %d val queries: %s", len(queries), weights)
    return True


def tuning_queries(
    generator: CandidateGenerator, pairs: Sequence[tuple[str, int]], *, k: int = TUNING_K
) -> list[TuningQuery]:
    """For (prompt, true version id) pairs: the candidates' features and the true card's row."""
    embedding_function = generator.dense.embedding_function
    vectors = embedding_function.embed_queries([prompt for prompt, _ in pairs])
    queries = []
    for (prompt, version_id), vector in zip(pairs, vectors, strict=True):
        candidates = generator.generate(prompt, k, vector=vector)
        rows = np.flatnonzero(candidates.ids == version_id)
        queries.append(
            TuningQuery(features=candidates.features, target=int(rows[0]) if len(rows) else -1)
        )
    return queries
