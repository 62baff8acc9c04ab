"""Composition (after Stylus): a checkpoint plus up to N LoRAs, one per concept of the prompt.

Concepts are the asked styles and the prompt's comma phrases. For each, the index's LoRAs of the
checkpoint's base model are read best first (for the phrase, then for its longest words alone)
and the first whose own evidence (tags, name) shows the concept is taken, unless it is
adult-oriented, a character or real-person LoRA the prompt does not name, dropped by the user,
another medium than the asked one, or the chosen model itself. Weights come from each card's
evidence (the most common `<lora:name:w>` of its sample prompts, else the base model's default),
style LoRAs are scaled by the conversation's style strength, and the total is capped.
"""

from __future__ import annotations

import re
from typing import Any

from diffagent.agent.card_api import card_params, relevant_triggers, with_trigger_words
from diffagent.agent.card_evidence import (
    STYLE_TAGS,
    conflicting_media,
    is_adult,
    is_character,
    named_in,
    style_score,
)
from diffagent.agent.context import AgentContext
from diffagent.agent.settings import CompositionSettings
from diffagent.agent.understand import MAX_PROMPT_CHARS, Constraints
from diffagent.agent.understand_style import MEDIA, STYLES, find_styles, media_of
from diffagent.api import T2IApi
from diffagent.cards import ModelCard

MAX_CONCEPTS = 5
"""Concepts of one prompt looked up at most (styles first)."""
POOL = 12
"""LoRAs read per index query."""
MAX_WORD_QUERIES = 3
"""Words of a phrase queried alone when no LoRA fits the whole phrase."""
_GENERIC = frozenset(
    {
        "girl", "girls", "boy", "boys", "woman", "women", "man", "men", "person", "people",
        "the", "and", "with", "from", "into", "very", "best", "high", "quality", "image",
        "picture", "photo", "style", "art", "cute", "beautiful", "happy", "detailed",
        "masterpiece", "lora", "one", "two", "her", "his", "its", "their", "over", "under",
    }
)  # fmt: skip
"""Words that show no concept a LoRA could add (persons, quality and filler words)."""
_STYLE_WORDS = frozenset(word for term in STYLES for word in term.split())


def concepts(cons: Constraints) -> list[tuple[str, str]]:
    """The prompt's concepts as (text, role): asked styles ("style"), then phrases ("content")."""
    found: list[tuple[str, str]] = [(style, "style") for style in find_styles(cons.query)]
    for phrase in re.split(r"[,;]|\bwith\b|\band\b", cons.prompt, flags=re.IGNORECASE):
        if concept_words(phrase):
            found.append((phrase.strip(), "content"))
    return found[:MAX_CONCEPTS]


def concept_words(text: str) -> set[str]:
    """The words of `text` that name a concept (no style, person, quality or filler words)."""
    words = {w for w in re.findall(r"[a-z0-9]+", text.lower()) if len(w) >= 3}
    return words - _GENERIC - _STYLE_WORDS


def shows_concept(card: ModelCard, text: str, role: str) -> bool:
    """Whether the card's own evidence (tags, name) shows the concept."""
    if role == "style":
        return style_score(card, text) >= 2.0
    evidence = set(re.findall(r"[a-z0-9]+", " ".join([card.name, *card.tags]).lower()))
    return bool(concept_words(text) & evidence)


def is_style_lora(card: ModelCard, styles: list[str]) -> bool:
    """Whether the LoRA carries a style: tagged as one, or showing an asked style."""
    tags = {tag.lower() for tag in card.tags}
    return bool(tags & STYLE_TAGS) or any(style_score(card, style) > 0 for style in styles)


def lora_weight(card: ModelCard, settings: CompositionSettings) -> float:
    """The card's evidence weight (its sample prompts' `<lora:name:w>`, else the default)."""
    return round(min(card_params(card).lora_weight, settings.max_weight), 2)


def _allowed(
    card: ModelCard, cons: Constraints, styles: list[str], prompt: str, taken: set[Any]
) -> bool:
    """Whether a LoRA may join the composition (see the module docstring)."""
    triggers = ", ".join(relevant_triggers(prompt, card))
    asked_media = {style for style in styles if style in MEDIA}
    return (
        card.version_id not in cons.drop_lora_ids
        and card.version_id not in cons.exclude_version_ids
        and (card.model_id, card.name) not in taken
        and (cons.allow_adult or not is_adult(card))
        and (not is_character(card) or named_in(card, cons.query))
        and not conflicting_media(card, styles)
        and set(media_of(triggers)) <= asked_media
        and card_params(card).lora_weight > 0
    )


def cap_weights(items: list[dict[str, Any]], cap: float) -> list[dict[str, Any]]:
    """Scale weights so their sum is at most `cap`: other LoRAs first, then the style ones.

    The chosen model's own LoRA counts with the style ones and always stays; a composed LoRA
    scaled below 0.1 is left out.
    """

    def first(item: dict[str, Any]) -> bool:
        return bool(item["role"] == "style" or item["own"])

    positive = [item for item in items if item["weight"] > 0]
    total = sum(item["weight"] for item in positive)
    if total <= cap + 1e-9:
        return items
    kept = sum(item["weight"] for item in positive if first(item))
    for item in positive:
        if kept >= cap:
            factor = cap / kept if first(item) else 0.0
        else:
            factor = 1.0 if first(item) else (cap - kept) / (total - kept)
        # Rounded down, so the rounded total stays within the cap.
        item["weight"] = int(item["weight"] * factor * 100) / 100
    return [item for item in items if item["own"] or item["weight"] >= 0.1]


def compose(
    ctx: AgentContext, cons: Constraints, api: dict[str, Any]
) -> tuple[dict[str, Any], list[dict[str, Any]], list[str]]:
    """The API with its composed LoRAs, the composition (one dict per LoRA) and notes.

    The chosen card stays: a LoRA card is the first LoRA (role "model", or "style" when it
    carries one). Composed LoRAs replace any others the API had.
    """
    settings = ctx.settings.composition
    card = ctx.catalog.get(int(api["version_id"]))
    if card is None:
        return api, [], []
    styles = find_styles(cons.query)
    limit = (
        settings.max_loras if cons.max_loras is None else min(cons.max_loras, settings.max_loras)
    )
    items: list[dict[str, Any]] = []
    if card.type == "LORA":
        role = "style" if is_style_lora(card, styles) else "model"
        items.append(_item(card, "the chosen model", role, settings, own=True))
        limit = max(limit, 1)
    if not cons.no_lora:
        items += _concept_loras(ctx, cons, card, str(api["prompt"]), limit - len(items))
    for item in items:
        if item["role"] == "style" and item["weight"] > 0:
            strong = item["weight"] * cons.style_strength
            item["weight"] = round(min(strong, settings.max_weight), 2)
    asked_style = _style_total(items)
    count = len(items)
    capped = cap_weights(items, settings.max_total_weight)
    notes = []
    if len(capped) < count:
        notes.append("A LoRA was left out: the total LoRA weight is capped.")
    if cons.style_strength > 1 and _style_total(capped) < asked_style:
        notes.append(
            f"The style LoRAs are at the total weight cap ({settings.max_total_weight:g}); "
            "say 'fewer LoRAs' to give the style more room."
        )
    prompt = str(api["prompt"])
    for item in capped:
        lora = ctx.catalog.get(item["version_id"])
        if lora is not None and not item["own"]:
            longer = with_trigger_words(prompt, lora)
            prompt = longer if len(longer) <= MAX_PROMPT_CHARS else prompt
    loras = [
        {"version_id": i["version_id"], "name": i["name"], "weight": i["weight"]}
        | {"base_model": card.base_model}
        for i in capped
    ]
    composed = T2IApi.model_validate({**api, "loras": loras, "prompt": prompt})
    return composed.model_dump(mode="json"), capped, notes


def _style_total(items: list[dict[str, Any]]) -> float:
    return sum(item["weight"] for item in items if item["role"] == "style")


def _concept_loras(
    ctx: AgentContext, cons: Constraints, card: ModelCard, prompt: str, room: int
) -> list[dict[str, Any]]:
    """Up to `room` LoRAs of the card's base model, the first fitting one per concept."""
    styles = find_styles(cons.query)
    # The chosen model and dropped LoRAs are left out whole, not only the version.
    taken: set[Any] = {(card.model_id, card.name)}
    taken |= {(c.model_id, c.name) for v in cons.drop_lora_ids if (c := ctx.catalog.get(v))}
    items: list[dict[str, Any]] = []
    for text, role in concepts(cons):
        if len(items) >= room:
            break
        for query in concept_queries(text, role):
            hits = ctx.index.query(query, POOL, base_model=card.base_model, model_type="LORA")
            lora = next(
                (
                    hit.card
                    for hit in hits
                    if hit.card.base_model == card.base_model
                    and shows_concept(hit.card, text, role)
                    and _allowed(hit.card, cons, styles, prompt, taken)
                ),
                None,
            )
            if lora is not None:
                items.append(_item(lora, text, role, ctx.settings.composition))
                taken.add((lora.model_id, lora.name))
                prompt = with_trigger_words(prompt, lora)
                break
    return items


def concept_queries(text: str, role: str) -> list[str]:
    """Index queries for a concept: the phrase, then (when no LoRA fits it) its longest words."""
    if role == "style":
        return [f"{text} style"]
    words = sorted(concept_words(text), key=lambda word: (-len(word), word))
    return [text, *words[:MAX_WORD_QUERIES]] if len(words) > 1 else [text]


def _item(
    card: ModelCard, concept: str, role: str, settings: CompositionSettings, *, own: bool = False
) -> dict[str, Any]:
    return {
        "version_id": card.version_id,
        "name": card.name,
        "weight": lora_weight(card, settings),
        "concept": concept,
        "role": role,
        "own": own,
    }
