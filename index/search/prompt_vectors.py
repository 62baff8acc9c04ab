"""MiniLM embeddings of every evidence prompt, cached in the index folder by prompt text.

The dense ranker features compare a query with each card's evidence prompts, so every prompt is
embedded once (cut to the query length, 64 tokens) and kept in `prompt-vectors/`; a rebuild only
embeds prompts it has not seen.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from diffagent.index.search.embeddings import (
    DEFAULT_QUERY_MAX_SEQ_LENGTH,
    EMBEDDING_DIM,
    MiniLMEmbeddingFunction,
)

VECTORS_DIR = "prompt-vectors"
_VECTORS = "vectors.npy"
_KEYS = "keys.json"


def _key(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


def prompt_vectors(
    texts: Sequence[str], index_dir: Path, *, show_progress: bool = True
) -> np.ndarray:
    """Unit embeddings of `texts` (one row each), embedding only those not cached yet."""
    folder = Path(index_dir) / VECTORS_DIR
    cached: dict[str, np.ndarray] = {}
    if (folder / _VECTORS).is_file() and (folder / _KEYS).is_file():
        keys = json.loads((folder / _KEYS).read_text(encoding="utf-8"))
        vectors = np.load(folder / _VECTORS)
        cached = {key: vectors[row] for row, key in enumerate(keys)}
    wanted = [_key(text) for text in texts]
    missing = sorted(
        {(key, text) for key, text in zip(wanted, texts, strict=True) if key not in cached}
    )
    if missing:
        model = MiniLMEmbeddingFunction(max_seq_length=DEFAULT_QUERY_MAX_SEQ_LENGTH)
        new = model.embed([text for _, text in missing], show_progress=show_progress)
        cached.update({key: new[row] for row, (key, _) in enumerate(missing)})
        folder.mkdir(parents=True, exist_ok=True)
        keys = sorted(cached)
        np.save(folder / _VECTORS, np.stack([cached[key] for key in keys]).astype(np.float32))
        (folder / _KEYS).write_text(json.dumps(keys), encoding="utf-8")
    if not texts:
        return np.zeros((0, EMBEDDING_DIM), np.float32)
    return np.stack([cached[key] for key in wanted]).astype(np.float32)
