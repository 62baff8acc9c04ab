"""A loaded catalog: the cards of one catalog directory with lookups by id, name and hash.

A catalog directory holds `cards.jsonl`, `pairs/{train,val,test}.jsonl`, `stats.json` and
`evidence.jsonl` (every kept SFW sample prompt per version, with its image id).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from diffagent.cards import ModelCard, read_cards

CARDS_FILE = "cards.jsonl"
EVIDENCE_FILE = "evidence.jsonl"


def starter_catalog_dir() -> Path:
    """The starter catalog shipped inside the package (at most 500 popular cards)."""
    return Path(str(resources.files("diffagent.index") / "starter"))


@dataclass
class Catalog:
    """Cards of one catalog directory, indexed for exact lookups."""

    directory: Path
    cards: dict[int, ModelCard] = field(default_factory=dict)
    _by_name: dict[str, list[int]] = field(default_factory=dict, repr=False)
    _by_hash: dict[str, int] = field(default_factory=dict, repr=False)

    @classmethod
    def load(cls, directory: Path) -> Catalog:
        """Load `directory/cards.jsonl`; a missing file is an error naming the build command."""
        path = Path(directory) / CARDS_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"no catalog at {path}; build one with "
                "`diffagent catalog build --civitai FILE --out DIR`"
            )
        catalog = cls(directory=Path(directory))
        for card in read_cards(path):
            catalog.add(card)
        if not catalog.cards:
            raise ValueError(
                f"the catalog at {path} has no cards; rebuild it from a crawl with models "
                "that pass the filters (`diffagent catalog build`)"
            )
        return catalog

    def add(self, card: ModelCard) -> None:
        """Add or replace one card."""
        self.cards[card.version_id] = card
        for key in {card.name.lower(), card.display_name.lower()}:
            ids = self._by_name.setdefault(key, [])
            if card.version_id not in ids:
                ids.append(card.version_id)
        self._by_hash[card.file.sha256.upper()] = card.version_id
        if card.file.autov2:
            self._by_hash[card.file.autov2.upper()] = card.version_id

    def __len__(self) -> int:
        return len(self.cards)

    def __iter__(self) -> Iterator[ModelCard]:
        return iter(self.cards.values())

    def get(self, version_id: int) -> ModelCard | None:
        """The card of a version id, or None."""
        return self.cards.get(version_id)

    def by_name(self, name: str) -> list[ModelCard]:
        """Cards whose model name or 'name version' equals `name` (case-insensitive)."""
        return [self.cards[i] for i in self._by_name.get(name.strip().lower(), [])]

    def by_hash(self, file_hash: str) -> ModelCard | None:
        """The card whose primary file has this SHA256 or AutoV2 (10-hex) hash, or None."""
        return self.cards.get(self._by_hash.get(file_hash.strip().upper(), -1))


def iter_evidence(directory: Path) -> Iterator[tuple[int, list[tuple[int, str]]]]:
    """(version id, [(image id, prompt), ...]) per line of `directory/evidence.jsonl` (or none)."""
    path = Path(directory) / EVIDENCE_FILE
    if not path.is_file():
        return
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                row = json.loads(line)
                yield int(row["version_id"]), [(int(i), str(p)) for i, p in row["prompts"]]
