"""Composition edits of a chat message: fewer LoRAs, drop the X LoRA, stronger style, try models."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from diffagent.agent.understand_text import NO_LORA_RE

if TYPE_CHECKING:
    from diffagent.agent.understand import Constraints

FEWER_LORAS_RE = re.compile(
    r"\b(fewer|less)\s+loras?\b|\b(?:at\s+most|only|max(?:imum)?|just)\s+(\d|one|two|three)\s+"
    r"loras?\b",
    re.IGNORECASE,
)
STRONGER_STYLE_RE = re.compile(
    r"\b(stronger|more|heavier|increase\s+the|boost\s+the|strengthen\s+the)\s+style\b|"
    r"\bstyle\s+(stronger|up)\b",
    re.IGNORECASE,
)
WEAKER_STYLE_RE = re.compile(
    r"\b(weaker|lighter|subtler|softer|decrease\s+the|reduce\s+the)\s+style\b|"
    r"\bless\s+style\b|\bstyle\s+(weaker|down)\b",
    re.IGNORECASE,
)
DROP_RE = re.compile(
    r"^\s*(?:please\s+)?(?:drop|remove|take\s+out|lose|without)\s+(?:the\s+)?(.+?)"
    r"(?:\s+loras?)?\s*[.!]?$",
    re.IGNORECASE,
)
TRY_MODELS_RE = re.compile(
    r"\b(try|compare|test)\s+(a\s+few|several|some|more|other|different|\d+|two|three|four)\s+"
    r"(other\s+|different\s+|more\s+)?(models|checkpoints|cards)\b",
    re.IGNORECASE,
)
_NUMBERS = {"one": 1, "two": 2, "three": 3}
STYLE_STEP = 1.25
"""'stronger style' multiplies the style LoRAs' weights by this; 'weaker style' divides."""
STYLE_STRENGTH_RANGE = (0.5, 2.0)


@dataclass
class CompositionEdit:
    """What a composition edit changed: in words, notes, and whether the model is chosen again."""

    changes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    replan: bool = False
    explore: bool = False


def _words(text: str) -> list[str]:
    return re.findall(r"[^\W_]+", text.lower())  # letters and digits of any script


def named_lora(
    name: str, loras: list[dict[str, Any]], *, said_lora: bool = True
) -> dict[str, Any] | None:
    """The LoRA of `loras` that `name` names: all its words in the LoRA's name, else None.

    Without the word "LoRA" in the message (`said_lora`), one word of a longer name is not
    enough: "remove the background" must not drop a "Detailed Background" LoRA.
    """
    wanted = [w for w in _words(name) if w not in {"lora", "loras", "the", "a"}]
    if not wanted:
        return None
    for lora in loras:
        words = [w for w in _words(str(lora.get("name", ""))) if w not in {"lora", "loras"}]
        if not all(word in words for word in wanted):
            continue
        if said_lora or len(wanted) >= 2 or len(set(words)) == 1:
            return lora
    return None


def composition_edit(
    text: str, cons: Constraints, current_api: dict[str, Any] | None
) -> CompositionEdit | None:
    """Apply a composition edit in `text` to `cons` (in place); None when the text has none.

    "fewer LoRAs" composes one LoRA less (at most N: "only 2 LoRAs"); "drop the X LoRA" leaves
    that LoRA out for the rest of the description (the model's own LoRA: another model is chosen);
    "stronger style" / "weaker style" scale the style LoRAs' weights; "try a few models" tries the
    next candidates this turn.
    """
    if TRY_MODELS_RE.search(text):
        return CompositionEdit(changes=["try a few models"], replan=True, explore=True)
    if current_api is None:
        return None
    loras: list[dict[str, Any]] = list(current_api.get("loras") or [])
    fewer = FEWER_LORAS_RE.search(text)
    if fewer:
        count = fewer.group(2)
        limit = len(loras) - 1 if count is None else _NUMBERS.get(count.lower()) or int(count)
        own = 1 if current_api.get("type") == "LORA" else 0
        limit = max(limit, own, 0)
        if limit >= len(loras):
            note = "The composition already has that few LoRAs"
            note += "; say 'no LoRA' for a checkpoint alone." if loras else "."
            return CompositionEdit(notes=[note])
        cons.max_loras = limit
        return CompositionEdit(changes=[f"at most {limit} LoRA{'s' if limit != 1 else ''}"])
    for pattern, factor, word in (
        (STRONGER_STYLE_RE, STYLE_STEP, "stronger"),
        (WEAKER_STYLE_RE, 1 / STYLE_STEP, "weaker"),
    ):
        if pattern.search(text):
            low, high = STYLE_STRENGTH_RANGE
            strength = round(min(high, max(low, cons.style_strength * factor)), 4)
            if strength == cons.style_strength:
                return CompositionEdit(notes=[f"The style is already as {word} as I make it."])
            cons.style_strength = strength
            return CompositionEdit(changes=[f"{word} style (x{strength:g})"])
    drop = DROP_RE.match(text)
    if drop and not NO_LORA_RE.search(text):
        said_lora = bool(re.search(r"\bloras?\b", text, re.IGNORECASE))
        lora = named_lora(drop.group(1), loras, said_lora=said_lora)
        if lora is None:
            if said_lora:
                names = ", ".join(str(lo["name"]) for lo in loras) or "none"
                return CompositionEdit(
                    notes=[f"No LoRA of the composition is called that: {names}."]
                )
            return None
        version_id = int(lora["version_id"])
        cons.drop_lora_ids = [*cons.drop_lora_ids, version_id]
        if version_id == current_api.get("version_id"):
            # The model's own LoRA: choose another model.
            cons.exclude_version_ids = [*cons.exclude_version_ids, version_id]
            cons.pin_version_id = None
            return CompositionEdit(changes=[f"dropped LoRA {lora['name']}"], replan=True)
        return CompositionEdit(changes=[f"dropped LoRA {lora['name']}"])
    return None
