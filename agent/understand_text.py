"""Patterns that read one chat message: declines, questions, settings-only messages and picks."""

from __future__ import annotations

import re
from collections.abc import Callable

from diffagent.agent.understand_style import find_styles
from diffagent.samplers import CANONICAL_SAMPLERS

NSFW_RE = re.compile(
    r"\b(nsfw|nude|nudes|naked|nudity|porn\w*|sex|sexual|explicit|hentai|topless|bottomless|"
    r"erotic\w*|lewd|xxx|genitals?|nipples?|uncensored)\b",
    re.IGNORECASE,
)
QUESTION_START_RE = re.compile(
    r"^\s*(what|what's|whats|how|why|who|when|where|explain|define|tell me|is|are|does|do|"
    r"should|could|can you explain)\b",
    re.IGNORECASE,
)
IMAGE_ASK_RE = re.compile(
    r"\b(draw|paint|generate|create|render|make|show me|picture|image of|photo of|illustrat\w*|"
    r"recommend|suggest|which model|what model|best model)\b",
    re.IGNORECASE,
)
REFINE_LEAD_RE = re.compile(
    r"^\s*(make it|make|more|less|use|now|try|change|switch|also|and|but|instead|please|"
    r"can you|could you|go|no|without|only|with|keep|set|another|different|add|faster|slower)\b",
    re.IGNORECASE,
)
SIZE_RE = re.compile(r"\b(\d{2,4})\s*[x×]\s*(\d{2,4})\b")
STEPS_RE = re.compile(
    r"\b(\d{1,3})\s*(?:sampling\s+)?steps\b|\bsteps\s*(?:to|=|:|of)?\s*(\d{1,3})\b"
)
CFG_RE = re.compile(
    r"\b(?:cfg|guidance)(?:\s*scale)?\s*(?:to|=|:|of)?\s*(\d{1,2}(?:\.\d+)?)", re.IGNORECASE
)
SEED_RE = re.compile(r"\bseed\s*(?:to|=|:|of)?\s*(\d{1,12})\b", re.IGNORECASE)
SDXL_RE = re.compile(r"\bsd\s?xl\b", re.IGNORECASE)
SD15_RE = re.compile(r"\b(sd\s?1\.?5|sd15|stable diffusion 1\.5)\b", re.IGNORECASE)
NO_LORA_RE = re.compile(
    r"\b(no|without|drop|remove)\s+(the\s+|any\s+|a\s+)?loras?\b|\bcheckpoints?\s+only\b",
    re.IGNORECASE,
)
LORA_OK_RE = re.compile(r"\b(use|with|add|allow)\s+(a\s+)?loras?\b|\bloras?\s+only\b", re.I)
ANOTHER_RE = re.compile(
    r"\b(another|different|other|new)\s+(model|checkpoint|one)\b|\bsomething else\b",
    re.IGNORECASE,
)
FASTER_RE = re.compile(r"\b(faster|quicker|speed it up|fewer steps|less steps)\b", re.I)
SLOWER_RE = re.compile(r"\b(slower|more steps|higher quality|more detail(ed)?)\b", re.I)
BIGGER_RE = re.compile(r"\b(bigger|larger|higher\s+res(olution)?|hi-?res|more pixels)\b", re.I)
SMALLER_RE = re.compile(r"\b(smaller|lower\s+res(olution)?|fewer pixels)\b", re.I)
WITHOUT_RE = re.compile(r"\b(?:without|no)\s+([a-z][a-z \-]{1,40}?)(?=[,.;!?]|$)", re.I)
ADD_RE = re.compile(r"^\s*(?:please\s+)?add\s+(.+?)\s*[.!]?$", re.IGNORECASE)
ANY_BASE_RE = re.compile(r"\bany\s+base(\s+model)?\b", re.IGNORECASE)
ASPECT_RE = re.compile(r"\b(square|portrait|landscape|vertical|horizontal|widescreen)\b", re.I)
PICK_RE = re.compile(
    r"^\s*(?:please\s+)?(?:use|pick|choose|select|switch\s+to)\s+(?:the\s+)?"
    r"(?:(?:model|card|checkpoint|lora)\s+)?(?:version\s*(?:id\s*)?#?\s*(\d{2,10})|(.+?))"
    r"(?:\s+(?:model|checkpoint|lora|instead))?\s*[.!]?$",
    re.IGNORECASE,
)
FILLER_RE = re.compile(
    r"\b(please|only|just|use|set|to|the|a|an|any|model|models|base|with|it|make|and|then|now|"
    r"try|at|of|in|on|for|change|switch|instead|keep|same|but|image|size|format|aspect|ratio|"
    r"orientation|mode|sampler|sampling|method)\b",
    re.IGNORECASE,
)


def is_question(text: str) -> bool:
    """Whether the message asks a question rather than for an image or a change."""
    asks = text.rstrip().endswith("?") or bool(QUESTION_START_RE.match(text))
    return asks and not IMAGE_ASK_RE.search(text) and not any_refinement(text)


SETTING_PATTERNS = (
    SDXL_RE,
    SD15_RE,
    ANY_BASE_RE,
    NO_LORA_RE,
    LORA_OK_RE,
    ANOTHER_RE,
    FASTER_RE,
    SLOWER_RE,
    SIZE_RE,
    BIGGER_RE,
    SMALLER_RE,
    STEPS_RE,
    CFG_RE,
    SEED_RE,
    ASPECT_RE,
)


def any_refinement(text: str) -> bool:
    """Whether the message names any setting (base, LoRA, size, steps, seed, sampler...)."""
    return any(pattern.search(text) for pattern in SETTING_PATTERNS) or sampler_in(text) != ""


def sampler_in(text: str) -> str:
    """The canonical sampler the message names, or ""."""
    for name in sorted(CANONICAL_SAMPLERS, key=len, reverse=True):
        if re.search(rf"(?<!\w){re.escape(name)}(?!\w)", text, re.IGNORECASE):
            return name
    return ""


def is_settings_only(text: str) -> bool:
    """Whether the message only sets parameters ("seed 42", "SDXL only", "any base model")."""
    rest = text
    sampler = sampler_in(text)
    if sampler:
        rest = re.sub(re.escape(sampler), " ", rest, flags=re.I)
    for pattern in SETTING_PATTERNS:
        rest = pattern.sub(" ", rest)
    rest = FILLER_RE.sub(" ", rest)
    return rest != text and not re.search(r"[^\W_]", rest)


def pick(text: str, resolve_name: Callable[[str], int | None] | None) -> int | None:
    """The version id of a card picked by "use version 1234" or "use <name>", else None."""
    match = PICK_RE.match(text)
    if match is None or any_refinement(text) or find_styles(text):
        return None
    if match.group(1):
        return int(match.group(1))
    return resolve_name(match.group(2).strip(" \"'")) if resolve_name else None


def looks_like_refinement(text: str) -> bool:
    """Whether the message reads as a change to the current image, not a new description."""
    words = len(text.split())
    if REFINE_LEAD_RE.match(text):
        return True
    return words <= 6 and (any_refinement(text) or find_styles(text) != [])
