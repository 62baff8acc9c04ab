"""MiniLM on onnxruntime: sentence-transformers' vectors, cached export, torch fallback."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from diffagent.index.search import onnx_minilm
from diffagent.index.search.embeddings import MiniLMEmbeddingFunction

TEXTS = [
    "masterpiece, best quality, 1girl, solo, long hair, cherry blossoms, kimono, outdoors, "
    "detailed background, (realistic:1.2), 8k uhd, dslr, soft lighting, film grain, "
    "looking at viewer, smile, upper body, depth of field, bokeh, intricate details",
    "a cute happy corgi, pixel art",
    "",
    "a cozy cabin in snowy mountains at dusk, oil painting",
]


def test_onnx_vectors_match_sentence_transformers() -> None:
    onnx = MiniLMEmbeddingFunction(max_seq_length=32, query_max_seq_length=16)
    torch = MiniLMEmbeddingFunction(max_seq_length=32, query_max_seq_length=16, backend="torch")
    documents, expected = onnx.embed(TEXTS), torch.embed(TEXTS)
    assert onnx.backend == "onnx"
    assert documents.shape == (len(TEXTS), 384)
    assert np.allclose(documents, expected, atol=1e-4)
    # queries are cut shorter than documents: the long text's vector changes, and still matches
    queries = onnx.embed_queries(TEXTS[:1])
    assert np.allclose(queries, torch.embed_queries(TEXTS[:1]), atol=1e-4)
    assert float(queries[0] @ documents[0]) < 0.999
    assert np.allclose(np.linalg.norm(documents, axis=1), 1.0, atol=1e-5)


def test_export_is_cached_by_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    onnx_minilm.OnnxMiniLM.load()
    calls: list[Path] = []
    monkeypatch.setattr(onnx_minilm, "export_onnx", lambda source, target: calls.append(target))
    onnx_minilm.OnnxMiniLM.load()
    assert calls == []
    assert onnx_minilm.onnx_path(onnx_minilm.model_dir()).is_file()


def test_failed_export_falls_back_to_torch(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(source: Path, target: Path) -> Path:
        raise RuntimeError("no onnx here")

    monkeypatch.setenv("DIFFAGENT_HOME", str(tmp_path))  # nothing cached there
    monkeypatch.setattr(onnx_minilm, "export_onnx", broken)
    function = MiniLMEmbeddingFunction(max_seq_length=32)
    with caplog.at_level(logging.WARNING):
        vectors = function.embed(TEXTS[1:2])
    assert function.backend == "torch"
    assert "no onnx here" in caplog.text
    expected = MiniLMEmbeddingFunction(max_seq_length=32, backend="torch").embed(TEXTS[1:2])
    assert np.allclose(vectors, expected, atol=1e-6)
