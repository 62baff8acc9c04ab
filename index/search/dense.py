"""The dense channel: card embeddings in a Chroma collection (sync, filtered query, close).

The collection lives in a local `PersistentClient` folder, or on a Chroma server (`chroma run`,
reached with `HttpClient`) when a server URL is given; the code path is the same.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
from tqdm import tqdm

from diffagent.cards import ModelCard
from diffagent.index.search.embeddings import MiniLMEmbeddingFunction

COLLECTION = "cards"
UPSERT_BATCH = 256
DELETE_BATCH = 5000
# Below this share of allowed cards, filters go to Chroma; above, neighbours are over-fetched.
SELECTIVE_FILTER = 0.1


def chroma_where(base_model: str | None, model_type: str | None) -> dict[str, Any] | None:
    """Chroma metadata filter for a base model and/or a model type (None when unfiltered)."""
    clauses: list[dict[str, Any]] = []
    if base_model:
        clauses.append({"base_model": base_model})
    if model_type:
        clauses.append({"type": model_type})
    if not clauses:
        return None
    return clauses[0] if len(clauses) == 1 else {"$and": clauses}


def server_collection_name(directory: Path) -> str:
    """The collection name of an index folder on a shared Chroma server.

    Made of the index folder's and its parent's names (e.g. `cards-catalog-full-index`), so
    workers with the same catalog layout share one collection and different catalogs do not.
    """
    path = Path(directory)
    parts = [path.parent.parent.name, path.parent.name] if path.name == "chroma" else [path.name]
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", "-".join(p for p in parts if p)).strip("-._")
    return f"{COLLECTION}-{slug}"[:63].rstrip("-._") if slug else COLLECTION


class DenseChannel:
    """One Chroma client and its card collection, opened on first use.

    `server_url` (e.g. http://127.0.0.1:8010) puts the collection on a Chroma server (named by
    `server_collection_name(directory)`); without it, a `PersistentClient` in `directory`.
    """

    def __init__(
        self,
        directory: Path,
        embedding_function: MiniLMEmbeddingFunction,
        *,
        server_url: str | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.embedding_function = embedding_function
        self.server_url = server_url
        self._client: Any = None
        self._collection: Any = None

    def _open_client(self) -> tuple[Any, str]:
        """A Chroma client and the collection name to use with it."""
        import chromadb
        from chromadb.config import Settings

        settings = Settings(anonymized_telemetry=False)
        if self.server_url is None:
            client = chromadb.PersistentClient(path=str(self.directory), settings=settings)
            return client, COLLECTION
        url = urlsplit(self.server_url)
        client = chromadb.HttpClient(
            host=url.hostname or "127.0.0.1",
            port=url.port or (443 if url.scheme == "https" else 8000),
            ssl=url.scheme == "https",
            settings=settings,
        )
        return client, server_collection_name(self.directory)

    @property
    def collection(self) -> Any:
        """The Chroma collection (client and collection are created on first access)."""
        if self._collection is None:
            self._client, name = self._open_client()
            self._collection = self._client.get_or_create_collection(
                name,
                embedding_function=self.embedding_function,  # never Chroma's downloading default
                configuration={"hnsw": {"space": "cosine"}},
            )
        return self._collection

    def close(self) -> None:
        """Release the Chroma client; the channel reopens on next use. Safe to call twice.

        Chroma's `Client.close()` (chromadb 1.5) gives back this client's reference to the
        System shared by every client of the same path and stops it after the last one. Older
        clients have no close(); there the references are dropped (their `clear_system_cache()`
        would pull the System from under other open clients of the same path).
        """
        close = getattr(self._client, "close", None)
        if callable(close):
            close()
        self._client = None
        self._collection = None

    def count(self) -> int:
        """How many cards the collection holds."""
        return int(self.collection.count())

    def sync(
        self,
        cards: Sequence[ModelCard],
        documents: Sequence[str],
        hashes: Sequence[str],
        *,
        show_progress: bool = True,
    ) -> tuple[int, int]:
        """Upsert new or changed cards and delete removed ones; return (embedded, removed)."""
        collection = self.collection
        stored = collection.get(include=["metadatas"])
        have = {
            id_: (meta or {}).get("doc_hash")
            for id_, meta in zip(stored["ids"], stored["metadatas"] or [], strict=False)
        }
        wanted = {str(card.version_id) for card in cards}
        stale = [id_ for id_ in have if id_ not in wanted]
        todo = [i for i, card in enumerate(cards) if have.get(str(card.version_id)) != hashes[i]]
        for offset in range(0, len(stale), DELETE_BATCH):
            collection.delete(ids=stale[offset : offset + DELETE_BATCH])
        with tqdm(
            total=len(todo), desc="embedding cards", unit="card", disable=not show_progress
        ) as bar:
            for offset in range(0, len(todo), UPSERT_BATCH):
                rows = todo[offset : offset + UPSERT_BATCH]
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

    def top(
        self,
        vector: np.ndarray,
        n: int,
        mask: np.ndarray,
        rows: Mapping[int, int],
        *,
        base_model: str | None = None,
        model_type: str | None = None,
    ) -> dict[int, float]:
        """Top-n allowed cards by cosine similarity: {version id: cosine}.

        `mask` marks the allowed cards by row and `rows` maps a version id to its row; the
        filter values are the ones `mask` was made from (for a selective filter, Chroma applies
        them itself).
        """
        allowed = int(mask.sum())
        if not allowed:
            return {}
        share = allowed / max(len(mask), 1)
        # Chroma's metadata filter costs time in proportion to the records it matches (30 ms for
        # 7.5k here): for a broad filter, over-fetch unfiltered neighbours and filter them here.
        if share < SELECTIVE_FILTER:
            where = chroma_where(base_model, model_type)
            fetch = min(n, allowed)
        else:
            where = None
            fetch = min(len(mask), n if share == 1.0 else int(np.ceil(2 * n / share)))
        result = self.collection.query(
            query_embeddings=[vector], n_results=fetch, where=where, include=["distances"]
        )
        dense: dict[int, float] = {}
        for id_, distance in zip(result["ids"][0], result["distances"][0], strict=True):
            row = rows.get(int(id_))
            if where is None and (row is None or not mask[row]):
                continue
            dense[int(id_)] = 1.0 - float(distance)
            if len(dense) == n:
                break
        return dense

    def nearest(self, vector: np.ndarray, k: int) -> list[int]:
        """Version ids of the k nearest cards, unfiltered."""
        result = self.collection.query(query_embeddings=[vector], n_results=k, include=[])
        return [int(i) for i in result["ids"][0]]

    def embeddings(self, version_ids: Sequence[int]) -> dict[int, np.ndarray]:
        """Stored embeddings of the given cards (those not in the collection are left out)."""
        if not version_ids:
            return {}
        stored = self.collection.get(ids=[str(i) for i in version_ids], include=["embeddings"])
        return {
            int(id_): np.asarray(vector)
            for id_, vector in zip(stored["ids"], stored["embeddings"], strict=True)
        }
