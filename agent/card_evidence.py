"""What a card's own evidence (tags, keywords, trigger words, name) says: styles, adult content."""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

from diffagent.agent.understand_style import MEDIA, STYLE_EVIDENCE, STYLES
from diffagent.cards import ModelCard

ADULT_STRONG = frozenset(
    {
        "nsfw",
        "nude",
        "nudity",
        "naked",
        "hentai",
        "porn",
        "porno",
        "erotic",
        "erotica",
        "ecchi",
        "lewd",
        "bdsm",
        "fetish",
        "genitals",
        "nipples",
        "nipple",
        "pussy",
        "penis",
        "topless",
        "yaoi",
        "bara",
        "futanari",
        "ahegao",
        "sex",
        "uncensored",
        "xxx",
    }
)
"""Terms that make a card adult-oriented when they are among its tags or in its name."""
ADULT_WEAK = frozenset(
    {
        "sexy",
        "lingerie",
        "bikini",
        "cleavage",
        "huge breasts",
        "large breasts",
        "breasts",
        "busty",
        "panties",
        "underwear",
        "seductive",
        "gay",
        "hairy body",
        "fundoshi",
        "funndoshi",
        "ass",
        "thighs",
        "muscular male",
        "bare shoulders",
        "navel",
        "swimsuit",
        "pantyhose",
    }
)
"""Terms that hint at adult content; three of them (or one with a strong keyword) decide."""
CHARACTER_TAGS = frozenset(
    {
        "character",
        "characters",
        "celebrity",
        "real person",
        "person",
        "vtuber",
        "kpop idol",
        "anime character",
        "game character",
        "video game character",
        "actress",
        "actor",
    }
)
"""Tags of LoRAs that draw one character or person (kept out unless the prompt names them)."""
_STYLE_WORDS = frozenset(word for term in STYLES for word in term.split())
STYLE_TAGS = frozenset({"style", "styles", "art style", "artstyle", "style lora", "style art"})
"""Tags of style LoRAs: a style LoRA tagged 'character' is still a style."""


@lru_cache(maxsize=64)
def _pattern(vocabulary: frozenset[str]) -> re.Pattern[str]:
    words = "|".join(re.escape(term) for term in sorted(vocabulary, key=len, reverse=True))
    return re.compile(rf"(?<![\w-])(?:{words})(?![\w-])")


def _hits(items: Iterable[str], vocabulary: Iterable[str]) -> set[str]:
    text = " | ".join(item.lower() for item in items)
    vocab = frozenset(vocabulary)
    found = set(_pattern(vocab).findall(text))
    # A longer term hides a shorter one it contains ("oil painting" and "painting"): add those.
    inner = {t for t in vocab - found for hit in found if _pattern(frozenset({t})).search(hit)}
    return found | inner


@lru_cache(maxsize=65536)
def _adult_terms(
    name: str, tags: tuple[str, ...], keywords: tuple[str, ...], triggers: tuple[str, ...]
) -> frozenset[str]:
    strong_tags = _hits([*tags, name], ADULT_STRONG)
    strong_keywords = _hits([*keywords, *triggers], ADULT_STRONG)
    weak = _hits([*tags, *keywords, *triggers, name], ADULT_WEAK)
    if strong_tags or (strong_keywords and weak) or len(strong_keywords) + len(weak) >= 3:
        return frozenset(strong_tags | strong_keywords | weak)
    return frozenset()


def adult_terms(card: ModelCard) -> set[str]:
    """The adult-oriented terms of the card's evidence (empty for a general-purpose card)."""
    return set(
        _adult_terms(card.name, tuple(card.tags), tuple(card.keywords), tuple(card.trigger_words))
    )


def is_adult(card: ModelCard) -> bool:
    """Whether the card is adult-oriented by its tags, keywords, trigger words or name."""
    return bool(adult_terms(card))


def style_score(card: ModelCard, style: str) -> float:
    """How strongly the card's evidence shows `style`: 2 per tag or name hit, 1 per keyword hit."""
    words = STYLE_EVIDENCE.get(style, (style,))
    score = 2.0 * len(_hits([*card.tags, card.name], words))
    score += 1.0 * len(_hits([*card.keywords, *card.trigger_words], words))
    return score


def conflicting_media(card: ModelCard, styles: list[str]) -> list[str]:
    """Media the card shows that exclude the asked medium, when it does not show the asked one."""
    asked = [style for style in styles if style in MEDIA]
    if not asked:
        return []
    if any(style_score(card, style) > 0 for style in asked):
        return []
    # Only tag-level evidence counts against a card: keywords are single sample prompts.
    return [
        medium
        for medium in MEDIA
        if medium not in asked and _hits([*card.tags, card.name], STYLE_EVIDENCE[medium])
    ]


def style_fit(card: ModelCard, styles: list[str]) -> float:
    """Evidence for the asked styles minus half the evidence for media that exclude them."""
    if not styles:
        return 0.0
    asked_media = [style for style in styles if style in MEDIA]
    fit = sum(min(style_score(card, style), 4.0) for style in styles)
    others = [m for m in MEDIA if asked_media and m not in asked_media]
    against = sum(
        min(style_score(card, medium), 4.0)
        for medium in others
        if not _shares_evidence(medium, asked_media)
    )
    return fit - 0.5 * against


def _shares_evidence(medium: str, asked: list[str]) -> bool:
    """Media whose evidence words overlap (oil painting and painterly) do not count against."""
    words = set(STYLE_EVIDENCE[medium])
    return any(words & set(STYLE_EVIDENCE.get(style, ())) for style in asked)


def is_character(card: ModelCard) -> bool:
    """Whether the card is a LoRA of one character or real person (by its tags)."""
    tags = {tag.lower() for tag in card.tags}
    return card.type == "LORA" and bool(tags & CHARACTER_TAGS) and not tags & STYLE_TAGS


def named_in(card: ModelCard, text: str) -> bool:
    """Whether `text` names the card: two words of its name, or a distinctive trigger ("ai_mie").

    Style words ("cyberpunk") and a single word ("moon" of "Sailor Mercury / Sailor Moon") do
    not name a character.
    """
    lower = text.lower()
    words = set(re.findall(r"[a-z0-9]+", lower))
    name_words = {w for w in re.findall(r"[a-z0-9]+", card.name.lower()) if len(w) >= 4}
    if len((name_words - _STYLE_WORDS) & words) >= min(2, len(name_words - _STYLE_WORDS) or 1):
        return True
    for trigger in (t.strip().lower() for t in card.trigger_words):
        distinctive = bool(re.search(r"[\d_]", trigger)) or len(trigger.split()) >= 2
        if distinctive and re.search(rf"(?<!\w){re.escape(trigger)}(?!\w)", lower):
            return True
    return False
