"""Understand one chat message: merge it with the conversation's constraints, detect its intent."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel, Field

from diffagent.agent.understand_compose import composition_edit
from diffagent.agent.understand_style import MEDIA, drop_media, find_styles
from diffagent.agent.understand_text import (
    ADD_RE,
    ANOTHER_RE,
    ANY_BASE_RE,
    BIGGER_RE,
    CFG_RE,
    FASTER_RE,
    LORA_OK_RE,
    NO_LORA_RE,
    NSFW_RE,
    SD15_RE,
    SDXL_RE,
    SEED_RE,
    SIZE_RE,
    SLOWER_RE,
    SMALLER_RE,
    STEPS_RE,
    WITHOUT_RE,
    is_question,
    is_settings_only,
    looks_like_refinement,
    pick,
    sampler_in,
)
from diffagent.base_models import (
    BASE_MODELS,
    DEFAULT_BASE_MODEL,
    STEPS_RANGE,
    BaseModelName,
    ModelType,
)

Intent = Literal["image", "question", "nsfw", "empty"]

MAX_PROMPT_CHARS = 2000
"""Longer messages are cut to this many characters before retrieval and planning."""


class Constraints(BaseModel):
    """What the conversation asks of the next T2I API (kept across turns until changed)."""

    prompt: str = Field(default="", description="The image description (possibly truncated).")
    negative_prompt: str = Field(default="", description="Things the image must not show.")
    styles: list[str] = Field(default_factory=list, description="Style terms asked for.")
    base_model: BaseModelName | None = Field(default=None, description="Required base model.")
    model_type: ModelType | None = Field(default=None, description="Required card type.")
    no_lora: bool = Field(default=False, description="Checkpoints only; no LoRAs applied.")
    aspect: Literal["square", "portrait", "landscape"] | None = None
    width: int | None = Field(default=None, description="Explicit width in pixels.")
    height: int | None = Field(default=None, description="Explicit height in pixels.")
    steps: int | None = Field(default=None, description="Explicit sampling steps.")
    cfg_scale: float | None = Field(default=None, description="Explicit guidance scale.")
    sampler: str | None = Field(default=None, description="Explicit canonical sampler.")
    seed: int | None = Field(default=None, description="Explicit seed.")
    exclude_version_ids: list[int] = Field(
        default_factory=list, description="Cards the user asked to move away from."
    )
    pin_version_id: int | None = Field(
        default=None, description="The card the user picked by name or version id."
    )
    allow_adult: bool = Field(
        default=False, description="Adult-oriented cards may be picked (NSFW allowed)."
    )
    max_loras: int | None = Field(
        default=None, ge=0, description="LoRAs composed at most ('fewer LoRAs'); None = settings."
    )
    drop_lora_ids: list[int] = Field(
        default_factory=list, description="LoRAs the user dropped from the composition."
    )
    style_strength: float = Field(
        default=1.0, gt=0, description="Factor on the style LoRAs' weights ('stronger style')."
    )

    @property
    def query(self) -> str:
        """The text to retrieve and plan with: the prompt plus the asked styles."""
        extra = [style for style in self.styles if style.lower() not in self.prompt.lower()]
        return ", ".join(part for part in [self.prompt, *extra] if part)


class Understanding(BaseModel):
    """The result of reading one message in the context of the conversation."""

    intent: Intent
    constraints: Constraints
    replan: bool = Field(description="Whether the model must be chosen again (else kept).")
    changes: list[str] = Field(default_factory=list, description="What this message changed.")
    notes: list[str] = Field(default_factory=list, description="Things to tell the user.")
    explore: bool = Field(
        default=False, description="Try several candidate models this turn ('try a few models')."
    )


def understand(
    message: str,
    previous: Constraints | None = None,
    *,
    current_api: dict | None = None,
    allow_nsfw: bool = False,
    resolve_name: Callable[[str], int | None] | None = None,
) -> Understanding:
    """Read `message` against the previous constraints and the last API; return the merged result.

    A first message (or one that reads as a new description) becomes the prompt; later short
    messages are refinements that change only what they name. `resolve_name` maps a model name
    ("use DreamShaper") to a version id, or None when the catalog has no such card.
    """
    text = message.strip()
    notes: list[str] = []
    if len(text) > MAX_PROMPT_CHARS:
        notes.append(
            f"Your message was {len(text):,} characters; I used the first {MAX_PROMPT_CHARS:,}."
        )
        text = text[:MAX_PROMPT_CHARS]
    base = (previous or Constraints()).model_copy(deep=True)
    if not text:
        return Understanding(intent="empty", constraints=base, replan=False, notes=notes)
    if not allow_nsfw and NSFW_RE.search(text):
        return Understanding(intent="nsfw", constraints=base, replan=False, notes=notes)
    if is_question(text):
        return Understanding(intent="question", constraints=base, replan=False, notes=notes)

    merged = base
    merged.allow_adult = allow_nsfw
    changes: list[str] = []
    replan = False
    has_prompt = bool(merged.prompt)
    picked = pick(text, resolve_name) if has_prompt else None
    if picked is not None:
        merged.pin_version_id = picked
        merged.exclude_version_ids = [v for v in merged.exclude_version_ids if v != picked]
        return Understanding(
            intent="image",
            constraints=merged,
            replan=True,
            changes=[f"use version {picked}"],
            notes=notes,
        )
    edit = composition_edit(text, merged, current_api) if has_prompt else None
    if edit is not None:
        return Understanding(
            intent="image",
            constraints=merged,
            replan=edit.replan,
            changes=edit.changes,
            notes=[*notes, *edit.notes],
            explore=edit.explore,
        )
    settings_only = is_settings_only(text)
    refinement = has_prompt and (settings_only or looks_like_refinement(text))
    if not has_prompt and settings_only:
        # "SDXL only" before any description: remember the settings, ask for the image.
        _apply_base_and_type(text, merged, changes, current_api)
        _apply_size(text, merged, changes, True)
        _apply_sampling(text, merged, changes, current_api)
        notes.append(f"Noted: {', '.join(changes) or 'your settings'}.")
        return Understanding(
            intent="empty", constraints=merged, replan=False, changes=changes, notes=notes
        )
    if not refinement:
        # A new description: new prompt, styles and exclusions; hard constraints are kept.
        merged.prompt = text
        merged.styles = []
        merged.exclude_version_ids = []
        merged.negative_prompt = ""
        merged.pin_version_id = None
        merged.max_loras, merged.drop_lora_ids, merged.style_strength = None, [], 1.0
        replan = True
        changes.append("new prompt")

    replan |= _apply_base_and_type(text, merged, changes, current_api)
    replan |= _apply_styles(text, merged, changes, refinement)
    if ANOTHER_RE.search(text) and current_api and current_api.get("version_id") is not None:
        merged.exclude_version_ids.append(int(current_api["version_id"]))
        changes.append("another model")
        replan = True
    if replan:
        merged.pin_version_id = None  # a re-plan chooses again; the pick was for the old request
    _apply_size(text, merged, changes, refinement)
    if refinement:
        _apply_scale(text, merged, changes, current_api)
    _apply_sampling(text, merged, changes, current_api)
    if refinement:
        _apply_content(text, merged, changes)
    if refinement and not changes and settings_only:
        notes.append("That is already so; nothing changed.")
    elif refinement and not changes:
        # A refinement we could not map onto a field: treat it as more description.
        merged.prompt = f"{merged.prompt}, {text}"
        changes.append("prompt extended")
        replan = True
    return Understanding(
        intent="image", constraints=merged, replan=replan, changes=changes, notes=notes
    )


def _apply_base_and_type(
    text: str, merged: Constraints, changes: list[str], current_api: dict | None
) -> bool:
    replan = False
    base: BaseModelName | None = None
    if ANY_BASE_RE.search(text) and merged.base_model is not None:
        merged.base_model = None
        changes.append("any base model")
    elif SDXL_RE.search(text):
        base = "SDXL 1.0"
    elif SD15_RE.search(text):
        base = "SD 1.5"
    if base is not None and base != merged.base_model:
        merged.base_model = base
        changes.append(f"base model {base}")
        replan |= current_api is None or current_api.get("base_model") != base
        if merged.width is not None:
            merged.width = merged.height = None  # an explicit size for the old base no longer fits
    if NO_LORA_RE.search(text):
        if not merged.no_lora:
            changes.append("no LoRA")
        merged.no_lora = True
        merged.model_type = "Checkpoint"
        replan |= bool(current_api and current_api.get("type") == "LORA")
    elif LORA_OK_RE.search(text):
        merged.no_lora = False
        merged.model_type = "LORA" if re.search(r"\bloras?\s+only\b", text, re.I) else None
        changes.append("LoRA allowed")
        replan = True
    return replan


def _apply_styles(text: str, merged: Constraints, changes: list[str], refinement: bool) -> bool:
    styles = find_styles(text)
    if not styles:
        return False
    if refinement and re.search(r"\bless\b", text, re.I):
        merged.styles = [s for s in merged.styles if s not in styles]
        changes.append("less " + ", ".join(styles))
        return True
    if not refinement:
        return False  # styles inside a new description are already in its prompt
    for style in styles:
        if style in MEDIA:
            # A new medium replaces the old one, in the asked styles and in the prompt's words.
            merged.styles = [s for s in merged.styles if s not in MEDIA]
            merged.prompt = drop_media(merged.prompt, keep=style)
        if style not in merged.styles:
            merged.styles.append(style)
    changes.append("style " + ", ".join(styles))
    return True


def _apply_size(text: str, merged: Constraints, changes: list[str], refinement: bool) -> None:
    size = SIZE_RE.search(text)
    if size:
        merged.width, merged.height = int(size.group(1)), int(size.group(2))
        merged.aspect = None
        changes.append(f"size {merged.width}x{merged.height}")
        return
    # Inside a description "portrait"/"landscape" are usually content; there only explicit
    # phrasings count ("portrait format", "in landscape", a trailing ", square").
    words = {
        "square": r"square",
        "portrait": r"(portrait|vertical|tall)",
        "landscape": r"(landscape|horizontal|wide|widescreen)",
    }
    for aspect, word in words.items():
        if refinement:
            patterns = [rf"\b{word}\b"]
        else:
            patterns = [
                rf"\b{word}\s+(format|orientation|mode|aspect|image|size)\b",
                rf"\bin\s+{word}\b",
                rf"(^|[,;.]\s*){word}\s*([,;.]|$)",
            ]
        if any(re.search(pattern, text, re.I) for pattern in patterns):
            merged.aspect = aspect  # type: ignore[assignment]
            merged.width = merged.height = None
            changes.append(aspect)
            return


def _apply_scale(
    text: str, merged: Constraints, changes: list[str], current_api: dict | None
) -> None:
    """'bigger'/'higher resolution' or 'smaller' scale the current size by 1.5 (x64 px)."""
    if not current_api or not current_api.get("width") or not current_api.get("height"):
        return
    if BIGGER_RE.search(text):
        factor = 1.5
    elif SMALLER_RE.search(text):
        factor = 1 / 1.5
    else:
        return
    spec = BASE_MODELS.get(str(current_api.get("base_model"))) or BASE_MODELS[DEFAULT_BASE_MODEL]
    low, high = spec.size_range
    width, height = (
        min(high, max(low, round(int(current_api[key]) * factor / 64) * 64))
        for key in ("width", "height")
    )
    merged.width, merged.height, merged.aspect = width, height, None
    changes.append(f"size {width}x{height}")


def _apply_sampling(
    text: str, merged: Constraints, changes: list[str], current_api: dict | None
) -> None:
    steps = STEPS_RE.search(text)
    current_steps = int((current_api or {}).get("sampling_steps") or merged.steps or 25)
    if steps:
        merged.steps = int(steps.group(1) or steps.group(2))
        changes.append(f"{merged.steps} steps")
    elif FASTER_RE.search(text):
        merged.steps = max(STEPS_RANGE[0] + 7, round(current_steps * 0.6))
        changes.append(f"faster ({current_steps} -> {merged.steps} steps)")
    elif SLOWER_RE.search(text):
        merged.steps = min(STEPS_RANGE[1], round(current_steps * 1.5))
        changes.append(f"more steps ({current_steps} -> {merged.steps})")
    cfg = CFG_RE.search(text)
    if cfg:
        merged.cfg_scale = float(cfg.group(1))
        changes.append(f"cfg {merged.cfg_scale:g}")
    sampler = sampler_in(text)
    if sampler:
        merged.sampler = sampler
        changes.append(f"sampler {sampler}")
    seed = SEED_RE.search(text)
    if seed:
        merged.seed = int(seed.group(1))
        changes.append(f"seed {merged.seed}")


def _apply_content(text: str, merged: Constraints, changes: list[str]) -> None:
    added = ADD_RE.match(text)
    if added:
        merged.prompt = f"{merged.prompt}, {added.group(1)}"
        changes.append(f"added {added.group(1)}")
    for match in WITHOUT_RE.finditer(text):
        thing = match.group(1).strip()
        if re.fullmatch(r"(the |any |a )?loras?", thing, re.I):
            continue
        negatives = [n for n in merged.negative_prompt.split(", ") if n]
        if thing not in negatives:
            merged.negative_prompt = ", ".join([*negatives, thing])
            changes.append(f"without {thing}")


def target_size(constraints: Constraints, base_model: str) -> tuple[int, int] | None:
    """The size the constraints ask for on `base_model`, or None when they leave it open."""
    if constraints.width is not None and constraints.height is not None:
        return constraints.width, constraints.height
    if constraints.aspect is not None:
        spec = BASE_MODELS.get(base_model) or BASE_MODELS[DEFAULT_BASE_MODEL]
        return spec.aspect_sizes[constraints.aspect]
    return None
