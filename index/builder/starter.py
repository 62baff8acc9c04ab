"""Pick the starter catalog (at most N popular cards, with the checkpoints its LoRAs run on)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from diffagent.cards import ModelCard, read_cards, write_cards
from diffagent.index.builder.describe import CardFacts, TemplateRewriter
from diffagent.index.builder.filters import PromptGuard
from diffagent.index.catalog import CARDS_FILE

STARTER_STATS_FILE = "stats.json"

# The starter ships with the package and backs the default demo, so it is held to a stricter
# bar than the catalog: a card whose name or trigger words are suggestive is left out, and
# suggestive tags and keywords are removed from the others (their description is rebuilt).
SUGGESTIVE_TERMS: tuple[str, ...] = (
    "sexy", "seductive", "lewd", "lingerie", "underwear", "panties", "pantsu", "bra", "bikini",
    "swimsuit", "cleavage", "breast", "breasts", "boobs", "ass", "butt", "crotch", "undress",
    "undressing", "see-through", "upskirt", "exposure", "thong", "latex", "fetish", "busty",
)  # fmt: skip


def _suggestive_card(card: ModelCard, guard: PromptGuard) -> bool:
    return any(guard.is_explicit(text) for text in [card.name, *card.trigger_words])


def clean_card(card: ModelCard, guard: PromptGuard) -> ModelCard:
    """The card without suggestive tags and keywords, its description rebuilt from the rest."""
    tags = [t for t in card.tags if not guard.is_explicit(t)]
    keywords = [k for k in card.keywords if not guard.is_explicit(k)]
    if tags == card.tags and keywords == card.keywords:
        return card
    facts = CardFacts(
        name=card.name,
        version_name=card.version_name,
        type=card.type,
        base_model=card.base_model,
        tags=tags,
        trigger_words=card.trigger_words,
        keywords=keywords,
    )
    description = TemplateRewriter().describe(facts)
    return card.model_copy(update={"tags": tags, "keywords": keywords, "description": description})


def select_starter(
    cards: list[ModelCard],
    max_cards: int,
    n_checkpoints: int,
    exclude_terms: tuple[str, ...] = SUGGESTIVE_TERMS,
) -> list[ModelCard]:
    """The most downloaded checkpoints, then the most downloaded LoRAs whose base is included.

    A LoRA whose recommended base checkpoint is not yet included brings it along when two slots
    are left; otherwise it is skipped, so every LoRA card can run on a card of the catalog.
    """
    if max_cards < 1:
        raise ValueError(f"--max must be at least 1, got {max_cards}")
    guard = PromptGuard(exclude_terms)
    by_id = {card.version_id: card for card in cards}
    popular = sorted(
        (c for c in cards if not _suggestive_card(c, guard)),
        key=lambda c: (-c.stats.downloads, c.version_id),
    )
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
        elif len(chosen) + 2 <= max_cards and not _suggestive_card(base, guard):
            chosen[base.version_id] = base
            chosen[card.version_id] = card
    ordered = sorted(chosen.values(), key=lambda c: (-c.stats.downloads, c.version_id))
    return [clean_card(card, guard) for card in ordered]


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
    ids = {card.version_id for card in cards}
    out_dir = Path(out_dir)
    write_cards(cards, out_dir / CARDS_FILE)
    summary = {
        "cards": len(cards),
        "by_type": dict(Counter(card.type for card in cards)),
        "by_base": dict(Counter(card.base_model for card in cards)),
        "loras_with_base_in_starter": sum(
            1
            for card in cards
            if card.type == "LORA" and card.recommended.base_checkpoint_version_id in ids
        ),
        "min_downloads": min((card.stats.downloads for card in cards), default=0),
    }
    (out_dir / STARTER_STATS_FILE).write_text(
        json.dumps(summary, indent=2) + "\n", encoding="utf-8"
    )
    return f"wrote {len(cards)} cards to {out_dir / CARDS_FILE}: {json.dumps(summary)}"
