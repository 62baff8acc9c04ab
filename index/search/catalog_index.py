"""The query-only hybrid index of one catalog: candidates from both channels, then fused ranking."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from diffagent.index.catalog import Catalog, starter_catalog_dir
from diffagent.index.search.build import BuildReport, build_index
from diffagent.index.search.candidates import CandidateGenerator, Candidates
from diffagent.index.search.dense import DenseChannel
from diffagent.index.search.embeddings import MiniLMEmbeddingFunction
from diffagent.index.search.filters import checked_query_args
from diffagent.index.search.fusion import FusionWeights, fuse
from diffagent.index.search.hits import SearchHit
from diffagent.index.search.layout import (
    CHROMA_DIR,
    FUSION_FILE,
    LEXICAL_DIR,
    MANIFEST_FILE,
    IndexManifest,
    default_index_dir,
)
from diffagent.index.search.lexical import LexicalIndex
from diffagent.index.search.names import NameSearch
from diffagent.index.search.ranked import RankedSearch
from diffagent.index.search.ranker import RankerConfig
from diffagent.index.search.table import CardTable


class CatalogIndex:
    """Hybrid search over one catalog's index folder; open with `CatalogIndex.open(catalog_dir)`.

    A query runs in two stages: `candidates` pools both channels' top cards as a feature
    matrix, `rank` scores them and keeps the top k. The index holds a Chroma client and an
    embedding thread: `close()` releases both (or use it as a context manager), after which
    every query raises RuntimeError; open the folder again to search it again.
    """

    def __init__(
        self,
        catalog: Catalog,
        index_dir: Path,
        embedding_function: MiniLMEmbeddingFunction,
        *,
        exclude_split: str | None = None,
        chroma_url: str | None = None,
    ) -> None:
        self.catalog = catalog
        self.index_dir = Path(index_dir)
        self.exclude_split = exclude_split
        self.ranked: RankedSearch | None = None
        self.embedding_function = embedding_function
        self.dense = DenseChannel(
            self.index_dir / CHROMA_DIR, embedding_function, server_url=chroma_url
        )
        self.weights = FusionWeights()
        self._generator: CandidateGenerator | None = None
        self._names = NameSearch(catalog, self.dense)
        self._executor: ThreadPoolExecutor | None = None
        self._closed = False

    # ----- opening, building, closing -----

    @classmethod
    def open(
        cls,
        catalog_dir: Path,
        index_dir: Path | None = None,
        *,
        build: bool = True,
        embedding_function: MiniLMEmbeddingFunction | None = None,
        exclude_split: str | None = None,
        chroma_url: str | None = None,
    ) -> CatalogIndex:
        """Open the index of a catalog directory, building it (incrementally) when outdated.

        `exclude_split` makes an evaluation index: its prompt evidence leaves that split's
        images out (an index folder of its own, e.g. `CATALOG/index-eval-test`).
        `chroma_url` keeps the dense channel on a Chroma server instead of the index folder.
        """
        catalog = Catalog.load(Path(catalog_dir))
        return cls.from_catalog(
            catalog,
            index_dir,
            build=build,
            embedding_function=embedding_function,
            exclude_split=exclude_split,
            chroma_url=chroma_url,
        )

    @classmethod
    def open_starter(cls, *, chroma_url: str | None = None) -> CatalogIndex:
        """The index of the starter catalog shipped in the package (built on first use)."""
        return cls.open(starter_catalog_dir(), chroma_url=chroma_url)

    @classmethod
    def from_catalog(
        cls,
        catalog: Catalog,
        index_dir: Path | None = None,
        *,
        build: bool = True,
        embedding_function: MiniLMEmbeddingFunction | None = None,
        exclude_split: str | None = None,
        chroma_url: str | None = None,
    ) -> CatalogIndex:
        """Open the index of an already loaded catalog (see `open`)."""
        folder = Path(index_dir) if index_dir else default_index_dir(catalog.directory)
        if index_dir is None and exclude_split:
            folder = folder.with_name(f"{folder.name}-eval-{exclude_split}")
        manifest = IndexManifest.read(folder) if folder.is_dir() else None
        if exclude_split is None and manifest is not None:
            exclude_split = manifest.exclude_split  # an evaluation index stays one
        index = cls(
            catalog,
            folder,
            embedding_function or MiniLMEmbeddingFunction(),
            exclude_split=exclude_split,
            chroma_url=chroma_url,
        )
        if build:
            index.build()
        elif not (index.index_dir / MANIFEST_FILE).is_file():
            raise FileNotFoundError(
                f"no index at {index.index_dir}; build it with "
                f"`diffagent index build --catalog {catalog.directory}`"
            )
        else:
            index._load()
        return index

    def build(
        self,
        *,
        tune_weights: bool = True,
        show_progress: bool = True,
        train_ranker: bool = True,
        ranker_config: RankerConfig | None = None,
    ) -> BuildReport:
        """Bring the index folder up to date with the catalog (see `build_index`), then load it.

        With prompt evidence in the catalog, the ranker is (re)trained when it is stale.
        """
        self._check_open()
        report = build_index(
            self.catalog,
            self.index_dir,
            self.embedding_function,
            dense=self.dense,
            tune_weights=tune_weights,
            show_progress=show_progress,
            exclude_split=self.exclude_split,
        )
        self._load()
        if self.ranked is not None and train_ranker:
            started = time.perf_counter()
            trained = self.ranked.train_if_stale(
                self.catalog, self.index_dir, ranker_config, show_progress=show_progress
            )
            if trained is not None:
                report.ranker = trained
                report.seconds = round(report.seconds + time.perf_counter() - started, 3)
        return report

    def _load(self) -> CandidateGenerator:
        """Read the lexical index and fusion weights; align the per-card arrays with them."""
        lexical = LexicalIndex.load(self.index_dir / LEXICAL_DIR)
        self.weights = FusionWeights.load(self.index_dir / FUSION_FILE)
        manifest = IndexManifest.read(self.index_dir)
        if manifest is not None and self.exclude_split is None:
            self.exclude_split = manifest.exclude_split
        self.ranked = RankedSearch.open(self.catalog, self.index_dir, self.exclude_split)
        table = CardTable.build(self.catalog, lexical.ids)
        self._generator = CandidateGenerator(lexical, self.dense, table)
        return self._generator

    def close(self) -> None:
        """Shut down the embedding thread and release the Chroma client. Safe to call twice."""
        self._closed = True
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
        self.dense.close()
        self._generator = None

    def __enter__(self) -> CatalogIndex:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(
                f"the index at {self.index_dir} is closed; open it again with CatalogIndex.open"
            )

    def _stage1(self) -> CandidateGenerator:
        """The candidate generator, loading the index on first use."""
        self._check_open()
        if self._generator is None:
            return self._load()
        return self._generator

    @property
    def collection(self) -> Any:
        """The Chroma collection of the dense channel."""
        self._check_open()
        return self.dense.collection

    @property
    def lexical(self) -> LexicalIndex:
        """The BM25 channel."""
        return self._stage1().lexical

    # ----- querying -----

    @property
    def ranker_scores(self) -> bool:
        """Whether `query` scores come from the learned ranker (rank mode fuses them)."""
        return self.ranked is not None and self.ranked.ranker is not None

    def query(
        self,
        text: str,
        k: int = 10,
        *,
        base_model: str | None = None,
        model_type: str | None = None,
    ) -> list[SearchHit]:
        """Top-k cards for a prompt, best first, optionally filtered by base model and type."""
        base_model, model_type = checked_query_args(k, base_model, model_type)
        generator = self._stage1()
        if self.ranked is not None:
            return self._ranked_hits(text, k, base_model, model_type)
        pending = None
        if self.weights.dense > 0:
            # The prompt embedding (the slowest step) runs while BM25 scores the cards.
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embed")
            pending = self._executor.submit(self._embed_query, text)
        candidates = generator.generate(
            text, k, pending=pending, base_model=base_model, model_type=model_type
        )
        return self.rank(candidates, k)

    def _ranked_hits(
        self, text: str, k: int, base_model: str | None, model_type: str | None
    ) -> list[SearchHit]:
        """Top-k by the evidence first stage and the learned ranker."""
        assert self.ranked is not None
        pending = None
        if self.ranked.uses_dense:
            # The prompt embedding (the slowest step) runs while the first stage scores cards.
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embed")
            pending = self._executor.submit(self._embed_query, text)
        found = self.ranked.search(
            text, k, base_model=base_model, model_type=model_type, pending=pending
        )
        hits = []
        for hit in found:
            card = self.catalog.get(hit.version_id)
            if card is not None:
                hits.append(
                    SearchHit(card=card, score=hit.score, lexical_score=hit.bm25, dense_score=None)
                )
        return hits

    def _embed_query(self, text: str) -> np.ndarray:
        return np.asarray(self.embedding_function.embed_queries([text])[0], dtype=np.float32)

    def candidates(
        self,
        text: str,
        k: int,
        *,
        vector: np.ndarray | None = None,
        base_model: str | None = None,
        model_type: str | None = None,
    ) -> Candidates:
        """Stage 1: both channels' candidates for a top-k query, with their features.

        The dense channel takes part when `vector` (the prompt's embedding) is given. Filters
        must be canonical spellings, as `filters.checked_query_args` returns them.
        """
        return self._stage1().generate(
            text, k, vector=vector, base_model=base_model, model_type=model_type
        )

    def rank(self, candidates: Candidates, k: int) -> list[SearchHit]:
        """Stage 2: the top-k candidates by fused score (ties: lower version id first)."""
        if not len(candidates):
            return []
        ids = candidates.ids
        fused = fuse(candidates.features, self.weights)
        order = np.lexsort((ids, -fused))[:k]  # ties: lower version id first (deterministic)
        hits = []
        for row in order:
            card = self.catalog.get(int(ids[row]))
            if card is None:
                continue
            cosine = candidates.cosine[row]
            hits.append(
                SearchHit(
                    card=card,
                    score=float(fused[row]),
                    lexical_score=float(candidates.lexical[row]),
                    dense_score=None if np.isnan(cosine) else float(cosine),
                )
            )
        return hits

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
        base_model, model_type = checked_query_args(k, base_model, model_type)
        table = self._stage1().table
        return self._names.search(name, k, table, table.mask(base_model, model_type))
