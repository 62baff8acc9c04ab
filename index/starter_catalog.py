"""Pick the starter catalog (at most N popular cards, with the checkpoints its LoRAs run on)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from diffagent.index.cards import ModelCard, read_cards, write_cards
from diffagent.index.catalog import CARDS_FILE

STARTER_STATS_FILE = "stats.json"


def select_starter(cards: list[ModelCard], max_cards: int, n_checkpoints: int) -> list[ModelCard]:
    """The most downloaded checkpoints, then the most downloaded LoRAs whose base is included.

    A LoRA whose recommended base checkpoint is not yet included brings it along when two slots
    are left; otherwise it is skipped, so every LoRA card can run on a card of the catalog.
    """
    if max_cards < 1:
        raise ValueError(f"--max must be at least 1, got {max_cards}")
    by_id = {card.version_id: card for card in cards}
    popular = sorted(cards, key=lambda c: (-c.stats.downloads, c.version_id))
    chosen: dict[int, ModelCard] = {}
    for card in popular:
        if card.type == "Checkpoint" and len(chosen) < min(n_checkpoints, max_cards):
            chosen[card.version_id] = card
    for card in popular:
        if len(chosen) >= max_cards:
            break
        if card.type != "LORA" or card.version_id in chosen:
            continue
        base_id = card.recommended.base_checkpoint_version_id
        base = by_id.get(base_id) if base_id is not None else None
        if base is None or base.version_id in chosen:
            chosen[card.version_id] = card
        elif len(chosen) + 2 <= max_cards:
            chosen[base.version_id] = base
            chosen[card.version_id] = card
    return sorted(chosen.values(), key=lambda c: (-c.stats.downloads, c.version_id))


def make_starter(
    catalog_dir: Path, out_dir: Path, max_cards: int = 500, n_checkpoints: int = 150
) -> str:
    """Write out_dir/cards.jsonl and out_dir/stats.json from a built catalog; return a summary."""
    source = Path(catalog_dir) / CARDS_FILE
    if not source.is_file():
        raise FileNotFoundError(
            f"no catalog at {source}; build one with `diffagent catalog build --civitai FILE`"
        )
    cards = select_starter(read_cards(source), max_cards, n_checkpoints)
    out_dir = Path(out_dir)
    write_cards(cards, out_dir / CARDS_FILE)
    summary = {
        "cards": len(cards),
        "by_type": dict(Counter(card.type for card in cards)),
        "by_base": dict(Counter(card.base_model for card in cards)),
        "lora_base_included": sum(
            1
            for card in cards
            if card.type == "LORA"
            and card.recommended.base_checkpoint_version_id in {c.version_id for c in cards}
        ),
        "min_downloads": min((card.stats.downloads for card in cards), default=0),
    }
    (out_dir / STARTER_STATS_FILE).write_text(
        json.dumps(summary, indent=2) + "\n", encoding="utf-8"
    )
    return f"wrote {len(cards)} cards to {out_dir / CARDS_FILE}: {json.dumps(summary)}"
