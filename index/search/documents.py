"""The text each channel indexes for a card, the catalog's prompt pairs, and their digests."""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from diffagent.cards import ModelCard
from diffagent.index.catalog import Catalog
from diffagent.index.search.lexical import CONFIG as LEXICAL_CONFIG

VAL_PAIRS = Path("pairs") / "val.jsonl"
TRAIN_PAIRS = Path("pairs") / "train.jsonl"
# Train prompts added to a card's lexical document (bounds document length for popular cards).
MAX_EVIDENCE = 20


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


def train_prompts(catalog: Catalog) -> dict[int, list[str]]:
    """Train-split prompts per version id (`pairs/train.jsonl`; empty when absent)."""
    path = catalog.directory / TRAIN_PAIRS
    prompts: dict[int, list[str]] = {}
    if path.is_file():
        for prompt, version_id in load_pairs(path, catalog):
            prompts.setdefault(version_id, []).append(prompt)
    return prompts


def digest(items: Iterable[str]) -> str:
    """SHA-256 hex digest of a sequence of strings (each one terminated, so order counts)."""
    sha = hashlib.sha256()
    for item in items:
        sha.update(item.encode("utf-8"))
        sha.update(b"\0")
    return sha.hexdigest()


@dataclass(frozen=True)
class CatalogDocuments:
    """Every card's documents for both channels, in version id order, with their digests."""

    cards: list[ModelCard]
    dense: list[str]
    lexical: list[str]
    dense_hashes: list[str]
    """Per card: hash of its dense document and filter metadata (stored in Chroma)."""
    dense_digest: str
    lexical_digest: str

    @classmethod
    def of(cls, catalog: Catalog) -> CatalogDocuments:
        """The documents of every card of `catalog` (lexical ones with its train prompts)."""
        cards = sorted(catalog, key=lambda card: card.version_id)
        dense = [dense_document(card) for card in cards]
        evidence = train_prompts(catalog)
        lexical = [lexical_document(card, evidence.get(card.version_id, [])) for card in cards]
        hashes = [
            digest([doc, card.base_model, card.type])[:16]
            for card, doc in zip(cards, dense, strict=True)
        ]
        return cls(
            cards=cards,
            dense=dense,
            lexical=lexical,
            dense_hashes=hashes,
            dense_digest=digest(
                f"{card.version_id}:{h}" for card, h in zip(cards, hashes, strict=True)
            ),
            lexical_digest=digest(
                [
                    LEXICAL_CONFIG,
                    *(f"{c.version_id}:{doc}" for c, doc in zip(cards, lexical, strict=True)),
                ]
            ),
        )
