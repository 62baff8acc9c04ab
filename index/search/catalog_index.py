"""Hybrid catalog index: Chroma (MiniLM, dense) beside BM25 (lexical), fused with tuned weights."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from tqdm import tqdm

from diffagent.cards import ModelCard
from diffagent.index.catalog import Catalog, starter_catalog_dir
from diffagent.index.search.embeddings import MiniLMEmbeddingFunction
from diffagent.index.search.fusion import (
    FEATURES,
    MODEL_GRID,
    FusionWeights,
    TuningQuery,
    candidate_features,
    fuse,
    tune,
)
from diffagent.index.search.lexical import CONFIG as LEXICAL_CONFIG
from diffagent.index.search.lexical import LexicalIndex
from diffagent.paths import user_data_dir
from diffagent.base_models import BASE_MODELS, MODEL_TYPES

log = logging.getLogger(__name__)

INDEX_FORMAT = 1
COLLECTION = "cards"
MANIFEST_FILE = "manifest.json"
FUSION_FILE = "fusion.json"
CHROMA_DIR = "chroma"
LEXICAL_DIR = "lexical"
VAL_PAIRS = Path("pairs") / "val.jsonl"
TRAIN_PAIRS = Path("pairs") / "train.jsonl"
# Train prompts added to a card's lexical document (bounds document length for popular cards).
MAX_EVIDENCE = 20
# Candidates each channel contributes before fusion (at least this many, else 5 x k).
MIN_CANDIDATES = 50
TUNING_QUERIES = 400
# Below this share of allowed cards, filters go to Chroma; above, neighbours are over-fetched.
SELECTIVE_FILTER = 0.1


class SearchHit(BaseModel):
    """One retrieved card with its fused score and each channel's raw score."""

    model_config = ConfigDict(arbitrary_types_allowed=False)

    card: ModelCard
    score: float = Field(description="Fused score, higher is better.")
    lexical_score: float | None = Field(description="BM25 score (name similarity for name search).")
    dense_score: float | None = Field(
        description="Cosine similarity; None if not a dense candidate."
    )


class BuildReport(BaseModel):
    """What one build did: all zeros and False when the index was already up to date."""

    cards: int = 0
    embedded: int = 0
    removed: int = 0
    lexical_rebuilt: bool = False
    tuned: bool = False
    seconds: float = 0.0

    @property
    def changed(self) -> bool:
        """Whether the build did any work."""
        return bool(self.embedded or self.removed or self.lexical_rebuilt or self.tuned)


class IndexManifest(BaseModel):
    """What the index on disk was built from (compared on open to decide what to rebuild)."""

    format: int = INDEX_FORMAT
    cards: int = 0
    dense_digest: str = ""
    lexical_digest: str = ""
    embedding: dict[str, Any] = Field(default_factory=dict)


def dense_document(card: ModelCard) -> str:
    """Compact text the dense channel embeds (MiniLM reads about its first 128 tokens)."""
    parts = [
        f"{card.display_name}. {card.type} for {card.base_model}.",
        f"Trigger words: {', '.join(card.trigger_words)}." if card.trigger_words else "",
        f"Tags: {', '.join(card.tags)}." if card.tags else "",
        f"Keywords: {', '.join(card.keywords[:20])}." if card.keywords else "",
        card.description[:400],
    ]
    return " ".join(part for part in parts if part)


def lexical_document(card: ModelCard, evidence: Sequence[str] = ()) -> str:
    """Text the BM25 channel indexes: names, trigger words, tags, keywords, description.

    `evidence` adds the version's train-split sample prompts when the catalog has them.
    """
    return " ".join(
        [
            card.name,
            card.version_name,
            " ".join(card.trigger_words),
            " ".join(card.tags),
            " ".join(card.keywords),
            card.description,
            *evidence[:MAX_EVIDENCE],
        ]
    )


def train_prompts(catalog: Catalog) -> dict[int, list[str]]:
    """Train-split prompts per version id (`pairs/train.jsonl`; empty when absent)."""
    path = catalog.directory / TRAIN_PAIRS
    prompts: dict[int, list[str]] = {}
    if path.is_file():
        for prompt, version_id in load_pairs(path, catalog):
            prompts.setdefault(version_id, []).append(prompt)
    return prompts


def normalize_filter(value: str | None, allowed: Sequence[str], what: str) -> str | None:
    """Map a filter value to its canonical spelling (case-insensitive) or raise listing choices."""
    if value is None or value == "":
        return None
    for choice in allowed:
        if value.strip().lower() == choice.lower():
            return choice
    raise ValueError(f"unknown {what} {value!r}; allowed: {', '.join(allowed)}")


def _digest(items: Iterable[str]) -> str:
    sha = hashlib.sha256()
    for item in items:
        sha.update(item.encode("utf-8"))
        sha.update(b"\0")
    return sha.hexdigest()


def _doc_hash(card: ModelCard, document: str) -> str:
    return _digest([document, card.base_model, card.type])[:16]


def default_index_dir(catalog_dir: Path) -> Path:
    """`catalog_dir/index`; under user_data_dir() for the packaged or a read-only catalog."""
    catalog_dir = Path(catalog_dir).resolve()
    packaged = catalog_dir == starter_catalog_dir().resolve()
    if not packaged and os.access(catalog_dir, os.W_OK):
        return catalog_dir / "index"
    key = hashlib.sha256(str(catalog_dir).encode()).hexdigest()[:12]
    return user_data_dir() / "indexes" / f"{catalog_dir.name}-{key}"


class CatalogIndex:
    """Hybrid search over one catalog; open with `CatalogIndex.open(catalog_dir)`."""

    def __init__(
        self,
        catalog: Catalog,
        index_dir: Path,
        embedding_function: MiniLMEmbeddingFunction,
    ) -> None:
        self.catalog = catalog
        self.index_dir = Path(index_dir)
        self.embedding_function = embedding_function
        self._client: Any = None
        self._collection: Any = None
        self._lexical: LexicalIndex | None = None
        self.weights = FusionWeights()
        self._name_index: tuple[Any, Any, np.ndarray] | None = None
        self._base = np.zeros(0, dtype=object)
        self._type = np.zeros(0, dtype=object)
        self._popularity = np.zeros(0, dtype=np.float32)
        self._present = np.zeros(0, dtype=bool)
        self._row: dict[int, int] = {}
        # Rows grouped by model id: BM25 gathered in this order is max-reduced per model.
        self._model_order = np.zeros(0, dtype=np.int64)
        self._model_starts = np.zeros(0, dtype=np.int64)
        self._model_group = np.zeros(0, dtype=np.int64)
        self._executor: ThreadPoolExecutor | None = None

    # ----- opening and building -----

    @classmethod
    def open(
        cls,
        catalog_dir: Path,
        index_dir: Path | None = None,
        *,
        build: bool = True,
        embedding_function: MiniLMEmbeddingFunction | None = None,
    ) -> CatalogIndex:
        """Open the index of a catalog directory, building it (incrementally) when outdated."""
        catalog = Catalog.load(Path(catalog_dir))
        return cls.from_catalog(
            catalog, index_dir, build=build, embedding_function=embedding_function
        )

    @classmethod
    def open_starter(cls) -> CatalogIndex:
        """The index of the starter catalog shipped in the package (built on first use)."""
        return cls.open(starter_catalog_dir())

    @classmethod
    def from_catalog(
        cls,
        catalog: Catalog,
        index_dir: Path | None = None,
        *,
        build: bool = True,
        embedding_function: MiniLMEmbeddingFunction | None = None,
    ) -> CatalogIndex:
        """Open the index of an already loaded catalog (see `open`)."""
        index = cls(
            catalog,
            Path(index_dir) if index_dir else default_index_dir(catalog.directory),
            embedding_function or MiniLMEmbeddingFunction(),
        )
        if build:
            index.build()
        elif not (index.index_dir / MANIFEST_FILE).is_file():
            raise FileNotFoundError(
                f"no index at {index.index_dir}; build it with "
                f"`diffagent index build --catalog {catalog.directory}`"
            )
        index._load()
        return index

    @property
    def collection(self) -> Any:
        """The Chroma collection of the dense channel."""
        if self._collection is None:
            import chromadb
            from chromadb.config import Settings

            self._client = chromadb.PersistentClient(
                path=str(self.index_dir / CHROMA_DIR),
                settings=Settings(anonymized_telemetry=False),
            )
            self._collection = self._client.get_or_create_collection(
                COLLECTION,
                embedding_function=self.embedding_function,  # never Chroma's downloading default
                configuration={"hnsw": {"space": "cosine"}},
            )
        return self._collection

    def _manifest(self) -> IndexManifest | None:
        path = self.index_dir / MANIFEST_FILE
        if not path.is_file():
            return None
        return IndexManifest.model_validate_json(path.read_text(encoding="utf-8"))

    def build(self, *, tune_weights: bool = True, show_progress: bool = True) -> BuildReport:
        """Bring the index up to date with the catalog; does no work when nothing changed."""
        start = time.perf_counter()
        self.index_dir.mkdir(parents=True, exist_ok=True)
        cards = sorted(self.catalog, key=lambda card: card.version_id)
        dense_docs = [dense_document(card) for card in cards]
        evidence = train_prompts(self.catalog)
        lexical_docs = [lexical_document(card, evidence.get(card.version_id, [])) for card in cards]
        hashes = [_doc_hash(card, doc) for card, doc in zip(cards, dense_docs, strict=True)]
        dense_digest = _digest(f"{c.version_id}:{h}" for c, h in zip(cards, hashes, strict=True))
        lexical_digest = _digest(
            [
                LEXICAL_CONFIG,
                *(f"{c.version_id}:{doc}" for c, doc in zip(cards, lexical_docs, strict=True)),
            ]
        )
        manifest = self._manifest() or IndexManifest()
        if manifest.format != INDEX_FORMAT:
            manifest = IndexManifest()
        report = BuildReport(cards=len(cards))

        if manifest.dense_digest != dense_digest:
            report.embedded, report.removed = self._sync_dense(
                cards, dense_docs, hashes, show_progress
            )
        if manifest.lexical_digest != lexical_digest or not (self.index_dir / LEXICAL_DIR).is_dir():
            LexicalIndex.build([c.version_id for c in cards], lexical_docs).save(
                self.index_dir / LEXICAL_DIR
            )
            self._lexical = None
            report.lexical_rebuilt = True
        (self.index_dir / MANIFEST_FILE).write_text(
            IndexManifest(
                cards=len(cards),
                dense_digest=dense_digest,
                lexical_digest=lexical_digest,
                embedding={
                    "name": self.embedding_function.name(),
                    **self.embedding_function.get_config(),
                },
            ).model_dump_json(indent=2),
            encoding="utf-8",
        )
        if tune_weights:
            report.tuned = self._maybe_tune(dense_digest + lexical_digest)
        report.seconds = round(time.perf_counter() - start, 3)
        return report

    def _sync_dense(
        self,
        cards: list[ModelCard],
        documents: list[str],
        hashes: list[str],
        show_progress: bool,
    ) -> tuple[int, int]:
        """Upsert new or changed cards into Chroma and delete removed ones; return the counts."""
        collection = self.collection
        stored = collection.get(include=["metadatas"])
        have = {
            id_: (meta or {}).get("doc_hash")
            for id_, meta in zip(stored["ids"], stored["metadatas"] or [], strict=False)
        }
        wanted = {str(card.version_id) for card in cards}
        stale = [id_ for id_ in have if id_ not in wanted]
        todo = [i for i, card in enumerate(cards) if have.get(str(card.version_id)) != hashes[i]]
        batch = 256
        if stale:
            for offset in range(0, len(stale), 5000):
                collection.delete(ids=stale[offset : offset + 5000])
        with tqdm(
            total=len(todo), desc="embedding cards", unit="card", disable=not show_progress
        ) as bar:
            for offset in range(0, len(todo), batch):
                rows = todo[offset : offset + batch]
                vectors = self.embedding_function.embed([documents[i] for i in rows])
                collection.upsert(
                    ids=[str(cards[i].version_id) for i in rows],
                    embeddings=vectors,
                    metadatas=[
                        {
                            "doc_hash": hashes[i],
                            "base_model": cards[i].base_model,
                            "type": cards[i].type,
                        }
                        for i in rows
                    ],
                )
                bar.update(len(rows))
        return len(todo), len(stale)

    def _load(self) -> None:
        """Load the lexical index and per-card arrays used at query time."""
        self._lexical = LexicalIndex.load(self.index_dir / LEXICAL_DIR)
        self.weights = FusionWeights.load(self.index_dir / FUSION_FILE)
        self._align()

    def _align(self) -> None:
        lexical = self.lexical
        cards = [self.catalog.get(int(i)) for i in lexical.ids]
        self._present = np.array([card is not None for card in cards], dtype=bool)
        self._base = np.array([card.base_model if card else "" for card in cards], dtype=object)
        self._type = np.array([card.type if card else "" for card in cards], dtype=object)
        downloads = np.array([card.stats.downloads if card else 0 for card in cards], np.float64)
        logs = np.log1p(downloads)
        top = float(logs.max(initial=0.0))
        self._popularity = (logs / top if top > 0 else logs).astype(np.float32)
        self._row = {int(i): row for row, i in enumerate(lexical.ids)}
        models = np.array([card.model_id if card else -1 - i for i, card in enumerate(cards)])
        self._model_order = np.argsort(models, kind="stable")
        sorted_models = models[self._model_order]
        self._model_starts = np.flatnonzero(
            np.r_[True, sorted_models[1:] != sorted_models[:-1]] if len(models) else []
        )
        self._model_group = np.zeros(len(models), dtype=np.int64)
        if len(models):
            self._model_group[self._model_order] = np.cumsum(
                np.r_[False, sorted_models[1:] != sorted_models[:-1]]
            )

    @property
    def lexical(self) -> LexicalIndex:
        """The BM25 channel."""
        if self._lexical is None:
            self._lexical = LexicalIndex.load(self.index_dir / LEXICAL_DIR)
        return self._lexical

    # ----- fusion tuning -----

    def _maybe_tune(self, index_digest: str) -> bool:
        """Tune fusion weights on the catalog's val split when it or the index changed."""
        path = self.catalog.directory / VAL_PAIRS
        if not path.is_file():
            return False
        pairs = load_pairs(path, self.catalog, limit=TUNING_QUERIES)
        config = json.dumps(self.embedding_function.get_config(), sort_keys=True)
        grid = f"features={FEATURES};model_grid={MODEL_GRID}"  # a new search space re-tunes
        digest = _digest([index_digest, config, grid, *(f"{p}:{v}" for p, v in pairs)])
        if FusionWeights.load(self.index_dir / FUSION_FILE).source_digest == digest:
            return False
        self._lexical = None
        self._align()
        queries = [
            TuningQuery(features=features, target=target)
            for features, target in self.candidate_features_batch(pairs)
        ]
        weights = tune(queries, digest=digest)
        weights.save(self.index_dir / FUSION_FILE)
        self.weights = weights
        log.info("fusion weights tuned on %d val queries: %s", len(queries), weights)
        return True

    def candidate_features_batch(
        self, pairs: Sequence[tuple[str, int]], *, k: int = 10
    ) -> list[tuple[np.ndarray, int]]:
        """For (prompt, true version id) pairs: candidate features and the true card's row."""
        vectors = self.embedding_function.embed_queries([prompt for prompt, _ in pairs])
        out = []
        for (prompt, version_id), vector in zip(pairs, vectors, strict=True):
            ids, features, _, _ = self._candidates(prompt, vector, k, None, None)
            hits = np.flatnonzero(ids == version_id)
            out.append((features, int(hits[0]) if len(hits) else -1))
        return out

    # ----- querying -----

    def _mask(self, base_model: str | None, model_type: str | None) -> np.ndarray:
        mask = self._present.copy()
        if base_model:
            mask &= self._base == base_model
        if model_type:
            mask &= self._type == model_type
        return mask

    @staticmethod
    def _where(base_model: str | None, model_type: str | None) -> dict[str, Any] | None:
        clauses: list[dict[str, Any]] = []
        if base_model:
            clauses.append({"base_model": base_model})
        if model_type:
            clauses.append({"type": model_type})
        if not clauses:
            return None
        return clauses[0] if len(clauses) == 1 else {"$and": clauses}

    def _lexical_candidates(
        self, text: str, n: int, mask: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """BM25 of every allowed card, its model's best BM25, and the top lexical rows.

        The rows are the top n by BM25 and the top n by BM25 + model BM25, so that the sibling
        versions of a well-matched model are candidates too.
        """
        lex_all = np.where(mask, self.lexical.scores(text), 0.0).astype(np.float32)
        if len(lex_all):
            best = np.maximum.reduceat(lex_all[self._model_order], self._model_starts)
            model_all = best[self._model_group]
        else:
            model_all = np.zeros(0, dtype=np.float32)
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

    def _candidates(
        self,
        text: str,
        vector: np.ndarray | None,
        k: int,
        base_model: str | None,
        model_type: str | None,
        pending: Future[np.ndarray] | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Both channels' top candidates: ids, features, raw BM25, cosine (NaN = absent).

        The dense channel is skipped when both `vector` and `pending` (an embedding being
        computed in another thread while BM25 scores) are None.
        """
        n = max(MIN_CANDIDATES, 5 * k)
        mask = self._mask(base_model, model_type)
        lex_all, model_all, lex_rows = self._lexical_candidates(text, n, mask)
        if pending is not None:
            vector = pending.result()
        dense = (
            {}
            if vector is None
            else self._dense_candidates(vector, n, mask, base_model, model_type)
        )
        rows = [int(r) for r in lex_rows]
        seen = set(int(i) for i in self.lexical.ids[lex_rows])
        rows += [self._row[i] for i in dense if i not in seen and i in self._row]
        row_arr = np.asarray(rows, dtype=np.int64)
        ids = self.lexical.ids[row_arr] if len(row_arr) else np.zeros(0, dtype=np.int64)
        lex = lex_all[row_arr] if len(row_arr) else np.zeros(0, dtype=np.float32)
        model = model_all[row_arr] if len(row_arr) else np.zeros(0, dtype=np.float32)
        cos = np.array([dense.get(int(i), np.nan) for i in ids], dtype=np.float32)
        pop = self._popularity[row_arr] if len(row_arr) else np.zeros(0, dtype=np.float32)
        top = float(lex_all.max(initial=0.0))
        return ids, candidate_features(lex, cos, pop, model, lexical_max=top), lex, cos

    def _dense_candidates(
        self,
        vector: np.ndarray,
        n: int,
        mask: np.ndarray,
        base_model: str | None,
        model_type: str | None,
    ) -> dict[int, float]:
        """Top-n allowed cards by cosine similarity: {version id: cosine}."""
        allowed = int(mask.sum())
        if not allowed:
            return {}
        share = allowed / max(len(mask), 1)
        # Chroma's metadata filter costs time in proportion to the records it matches (30 ms for
        # 7.5k here): for a broad filter, over-fetch unfiltered neighbours and filter them here.
        if share < SELECTIVE_FILTER:
            where = self._where(base_model, model_type)
            fetch = min(n, allowed)
        else:
            where = None
            fetch = min(len(mask), n if share == 1.0 else int(np.ceil(2 * n / share)))
        result = self.collection.query(
            query_embeddings=[vector], n_results=fetch, where=where, include=["distances"]
        )
        dense: dict[int, float] = {}
        for id_, distance in zip(result["ids"][0], result["distances"][0], strict=True):
            row = self._row.get(int(id_))
            if where is None and (row is None or not mask[row]):
                continue
            dense[int(id_)] = 1.0 - float(distance)
            if len(dense) == n:
                break
        return dense

    def query(
        self,
        text: str,
        k: int = 10,
        *,
        base_model: str | None = None,
        model_type: str | None = None,
    ) -> list[SearchHit]:
        """Top-k cards for a prompt, best first, optionally filtered by base model and type."""
        base_model, model_type = _checked_query_args(k, base_model, model_type)
        pending = None
        if self.weights.dense > 0:
            # The prompt embedding (the slowest step) runs while BM25 scores the cards.
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embed")
            pending = self._executor.submit(self._embed_query, text)
        ids, features, lex, cos = self._candidates(
            text, None, k, base_model, model_type, pending=pending
        )
        return self._hits(ids, features, lex, cos, k)

    def _embed_query(self, text: str) -> np.ndarray:
        return np.asarray(self.embedding_function.embed_queries([text])[0], dtype=np.float32)

    def query_with_vector(
        self,
        text: str,
        vector: np.ndarray,
        k: int = 10,
        *,
        base_model: str | None = None,
        model_type: str | None = None,
    ) -> list[SearchHit]:
        """`query` with the prompt's embedding already computed (batch evaluation)."""
        base_model, model_type = _checked_query_args(k, base_model, model_type)
        ids, features, lex, cos = self._candidates(text, vector, k, base_model, model_type)
        return self._hits(ids, features, lex, cos, k)

    def _hits(
        self, ids: np.ndarray, features: np.ndarray, lex: np.ndarray, cos: np.ndarray, k: int
    ) -> list[SearchHit]:
        """The top-k fused candidates as hits (ties: lower version id first)."""
        if not len(ids):
            return []
        fused = fuse(features, self.weights)
        order = np.lexsort((ids, -fused))[:k]  # ties: lower version id first (deterministic)
        hits = []
        for row in order:
            card = self.catalog.get(int(ids[row]))
            if card is None:
                continue
            hits.append(
                SearchHit(
                    card=card,
                    score=float(fused[row]),
                    lexical_score=float(lex[row]),
                    dense_score=None if np.isnan(cos[row]) else float(cos[row]),
                )
            )
        return hits

    def dense_only(self, vector: np.ndarray, k: int = 10) -> list[int]:
        """Version ids by the dense channel alone, for an embedded prompt (benchmarks)."""
        result = self.collection.query(
            query_embeddings=[vector], n_results=min(k, len(self.lexical)), include=[]
        )
        return [int(i) for i in result["ids"][0]]

    def lexical_only(self, text: str, k: int = 10) -> list[int]:
        """Version ids by the BM25 channel alone (for benchmarks)."""
        scores = self.lexical.scores(text)
        order = np.lexsort((self.lexical.ids, -scores))[:k]
        return [int(self.lexical.ids[i]) for i in order if scores[i] > 0]

    def nearest_by_name(
        self,
        name: str,
        k: int = 5,
        *,
        base_model: str | None = None,
        model_type: str | None = None,
    ) -> list[SearchHit]:
        """Cards whose name is closest to `name` (character n-grams, then embedding similarity).

        For repairing a misspelled or invented model name; `lexical_score` is the name similarity.
        """
        base_model, model_type = _checked_query_args(k, base_model, model_type)
        vectorizer, matrix, ids = self._names()
        if not len(ids) or not name.strip():
            return []
        sims = (matrix @ vectorizer.transform([name]).T).toarray().ravel()
        rows = [self._row.get(int(i), -1) for i in ids]
        mask = self._mask(base_model, model_type)
        allowed = np.array([r >= 0 and bool(mask[r]) for r in rows], dtype=bool)
        sims = np.where(allowed, sims, -1.0)
        take = min(max(MIN_CANDIDATES, 5 * k), int(allowed.sum()))
        if take == 0:
            return []
        top = np.argpartition(-sims, take - 1)[:take]
        top = top[sims[top] >= 0]
        candidate_ids = [str(int(ids[i])) for i in top]
        stored = self.collection.get(ids=candidate_ids, include=["embeddings"])
        vectors = dict(zip(stored["ids"], stored["embeddings"], strict=True))
        query = self.embedding_function.embed_queries([name])[0]
        cos = np.array(
            [float(np.dot(vectors[c], query)) if c in vectors else 0.0 for c in candidate_ids]
        )
        score = 0.8 * sims[top] + 0.2 * cos
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

    def _names(self) -> tuple[Any, Any, np.ndarray]:
        """Character n-gram TF-IDF over display names, built on first use."""
        if self._name_index is None:
            from sklearn.feature_extraction.text import TfidfVectorizer

            cards = list(self.catalog)
            ids = np.array([card.version_id for card in cards], dtype=np.int64)
            vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), lowercase=True)
            names = [card.display_name for card in cards]
            matrix = vectorizer.fit_transform(names) if names else None
            self._name_index = (vectorizer, matrix, ids)
        return self._name_index


def load_pairs(
    path: Path, catalog: Catalog | None = None, *, limit: int | None = None, seed: int = 0
) -> list[tuple[str, int]]:
    """(prompt, true version id) of a pairs JSONL file; a seeded sample of `limit` when given."""
    pairs = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if not line.strip():
                continue
            row = json.loads(line)
            version_id = row.get("api", {}).get("version_id")
            prompt = row.get("instruction", {}).get("prompt", "")
            if version_id is None or not prompt:
                continue
            if catalog is not None and catalog.get(int(version_id)) is None:
                continue
            pairs.append((prompt, int(version_id)))
    if limit is not None and len(pairs) > limit:
        pairs = random.Random(seed).sample(pairs, limit)
    return pairs


def _checked_query_args(
    k: int, base_model: str | None, model_type: str | None
) -> tuple[str | None, str | None]:
    """Validate k and normalise the metadata filters (one-line errors listing what is allowed)."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    return (
        normalize_filter(base_model, list(BASE_MODELS), "base model"),
        normalize_filter(model_type, MODEL_TYPES, "model type"),
    )
