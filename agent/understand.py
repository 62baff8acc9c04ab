"""Understand one chat message: merge it with the conversation's constraints, detect its intent."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, Field

from diffagent.base_models import (
    BASE_MODELS,
    DEFAULT_BASE_MODEL,
    STEPS_RANGE,
    BaseModelName,
    ModelType,
)
from diffagent.samplers import CANONICAL_SAMPLERS

Intent = Literal["image", "question", "nsfw", "empty"]

MAX_PROMPT_CHARS = 2000
"""Longer messages are cut to this many characters before retrieval and planning."""

# Style words a user may ask for, mapped to the term added to the prompt and the query.
_STYLES: dict[str, str] = {
    "anime": "anime",
    "manga": "anime",
    "cartoon": "cartoon",
    "painterly": "painterly",
    "oil painting": "oil painting",
    "watercolor": "watercolor",
    "watercolour": "watercolor",
    "photorealistic": "photorealistic",
    "realistic": "photorealistic",
    "photo": "photorealistic",
    "cinematic": "cinematic",
    "3d": "3d render",
    "pixel art": "pixel art",
    "sketch": "sketch",
    "comic": "comic",
    "fantasy": "fantasy",
    "cyberpunk": "cyberpunk",
    "digital art": "digital art",
}
# Rendering media exclude each other: asking for one drops the others.
_MEDIA = {"anime", "cartoon", "photorealistic", "3d render", "pixel art", "comic", "watercolor"}

_NSFW_RE = re.compile(
    r"\b(nsfw|nude|nudes|naked|nudity|porn\w*|sex|sexual|explicit|hentai|topless|bottomless|"
    r"erotic\w*|lewd|xxx|genitals?|nipples?|uncensored)\b",
    re.IGNORECASE,
)
_QUESTION_START_RE = re.compile(
    r"^\s*(what|what's|whats|how|why|who|when|where|explain|define|tell me|is|are|does|do|"
    r"should|could|can you explain)\b",
    re.IGNORECASE,
)
_IMAGE_ASK_RE = re.compile(
    r"\b(draw|paint|generate|create|render|make|show me|picture|image of|photo of|illustrat\w*|"
    r"recommend|suggest|which model|what model|best model)\b",
    re.IGNORECASE,
)
_REFINE_LEAD_RE = re.compile(
    r"^\s*(make it|make|more|less|use|now|try|change|switch|also|and|but|instead|please|"
    r"can you|could you|go|no|without|only|with|keep|set|another|different|add|faster|slower)\b",
    re.IGNORECASE,
)
_SIZE_RE = re.compile(r"\b(\d{2,4})\s*[x×]\s*(\d{2,4})\b")
_STEPS_RE = re.compile(
    r"\b(\d{1,3})\s*(?:sampling\s+)?steps\b|\bsteps\s*(?:to|=|:|of)?\s*(\d{1,3})\b"
)
_CFG_RE = re.compile(
    r"\b(?:cfg|guidance)(?:\s*scale)?\s*(?:to|=|:|of)?\s*(\d{1,2}(?:\.\d+)?)", re.IGNORECASE
)
_SEED_RE = re.compile(r"\bseed\s*(?:to|=|:|of)?\s*(\d{1,12})\b", re.IGNORECASE)
_SDXL_RE = re.compile(r"\bsd\s?xl\b", re.IGNORECASE)
_SD15_RE = re.compile(r"\b(sd\s?1\.?5|sd15|stable diffusion 1\.5)\b", re.IGNORECASE)
_NO_LORA_RE = re.compile(
    r"\b(no|without|drop|remove)\s+(the\s+|any\s+|a\s+)?loras?\b|\bcheckpoints?\s+only\b",
    re.IGNORECASE,
)
_LORA_OK_RE = re.compile(r"\b(use|with|add|allow)\s+(a\s+)?loras?\b|\bloras?\s+only\b", re.I)
_ANOTHER_RE = re.compile(
    r"\b(another|different|other|new)\s+(model|checkpoint|one)\b|\bsomething else\b",
    re.IGNORECASE,
)
_FASTER_RE = re.compile(r"\b(faster|quicker|speed it up|fewer steps|less steps)\b", re.I)
_SLOWER_RE = re.compile(r"\b(slower|more steps|higher quality|more detail(ed)?)\b", re.I)
_BIGGER_RE = re.compile(r"\b(bigger|larger|higher\s+res(olution)?|hi-?res|more pixels)\b", re.I)
_SMALLER_RE = re.compile(r"\b(smaller|lower\s+res(olution)?|fewer pixels)\b", re.I)
_WITHOUT_RE = re.compile(r"\b(?:without|no)\s+([a-z][a-z \-]{1,40}?)(?=[,.;!?]|$)", re.I)
_ADD_RE = re.compile(r"^\s*(?:please\s+)?add\s+(.+?)\s*[.!]?$", re.IGNORECASE)


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


def understand(
    message: str,
    previous: Constraints | None = None,
    *,
    current_api: dict | None = None,
    allow_nsfw: bool = False,
) -> Understanding:
    """Read `message` against the previous constraints and the last API; return the merged result.

    A first message (or one that reads as a new description) becomes the prompt; later short
    messages are refinements that change only what they name.
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
    if not allow_nsfw and _NSFW_RE.search(text):
        return Understanding(intent="nsfw", constraints=base, replan=False, notes=notes)
    if _is_question(text):
        return Understanding(intent="question", constraints=base, replan=False, notes=notes)

    merged = base
    changes: list[str] = []
    replan = False
    has_prompt = bool(merged.prompt)
    refinement = has_prompt and _looks_like_refinement(text)
    if not refinement:
        # A new description: new prompt, styles and exclusions; hard constraints are kept.
        merged.prompt = text
        merged.styles = []
        merged.exclude_version_ids = []
        merged.negative_prompt = ""
        replan = True
        changes.append("new prompt")

    replan |= _apply_base_and_type(text, merged, changes, current_api)
    replan |= _apply_styles(text, merged, changes, refinement)
    if _ANOTHER_RE.search(text) and current_api and current_api.get("version_id") is not None:
        merged.exclude_version_ids.append(int(current_api["version_id"]))
        changes.append("another model")
        replan = True
    _apply_size(text, merged, changes, refinement)
    if refinement:
        _apply_scale(text, merged, changes, current_api)
    _apply_sampling(text, merged, changes, current_api)
    if refinement:
        _apply_content(text, merged, changes)
    if refinement and not changes:
        # A refinement we could not map onto a field: treat it as more description.
        merged.prompt = f"{merged.prompt}, {text}"
        changes.append("prompt extended")
        replan = True
    return Understanding(
        intent="image", constraints=merged, replan=replan, changes=changes, notes=notes
    )


def _is_question(text: str) -> bool:
    asks = text.rstrip().endswith("?") or bool(_QUESTION_START_RE.match(text))
    return asks and not _IMAGE_ASK_RE.search(text) and not _any_refinement(text)


def _any_refinement(text: str) -> bool:
    return any(
        pattern.search(text)
        for pattern in (
            _SDXL_RE,
            _SD15_RE,
            _NO_LORA_RE,
            _ANOTHER_RE,
            _FASTER_RE,
            _SIZE_RE,
            _BIGGER_RE,
            _SMALLER_RE,
        )
    ) or bool(re.search(r"\b(square|portrait|landscape)\b", text, re.I))


def _looks_like_refinement(text: str) -> bool:
    words = len(text.split())
    if _REFINE_LEAD_RE.match(text):
        return True
    return words <= 6 and (_any_refinement(text) or _find_styles(text) != [])


def _find_styles(text: str) -> list[str]:
    lower = text.lower()
    found: list[str] = []
    for word, style in _STYLES.items():
        if re.search(rf"\b{re.escape(word)}\b", lower) and style not in found:
            found.append(style)
    return found


def _apply_base_and_type(
    text: str, merged: Constraints, changes: list[str], current_api: dict | None
) -> bool:
    replan = False
    base: BaseModelName | None = None
    if re.search(r"\bany\s+base(\s+model)?\b", text, re.I) and merged.base_model is not None:
        merged.base_model = None
        changes.append("any base model")
    elif _SDXL_RE.search(text):
        base = "SDXL 1.0"
    elif _SD15_RE.search(text):
        base = "SD 1.5"
    if base is not None and base != merged.base_model:
        merged.base_model = base
        changes.append(f"base model {base}")
        replan |= current_api is None or current_api.get("base_model") != base
        if merged.width is not None:
            merged.width = merged.height = None  # an explicit size for the old base no longer fits
    if _NO_LORA_RE.search(text):
        if not merged.no_lora:
            changes.append("no LoRA")
        merged.no_lora = True
        merged.model_type = "Checkpoint"
        replan |= bool(current_api and current_api.get("type") == "LORA")
    elif _LORA_OK_RE.search(text):
        merged.no_lora = False
        merged.model_type = "LORA" if re.search(r"\bloras?\s+only\b", text, re.I) else None
        changes.append("LoRA allowed")
        replan = True
    return replan


def _apply_styles(text: str, merged: Constraints, changes: list[str], refinement: bool) -> bool:
    styles = _find_styles(text)
    if not styles:
        return False
    if refinement and re.search(r"\bless\b", text, re.I):
        merged.styles = [s for s in merged.styles if s not in styles]
        changes.append("less " + ", ".join(styles))
        return True
    if not refinement:
        return False  # styles inside a new description are already in its prompt
    for style in styles:
        if style in _MEDIA:
            merged.styles = [s for s in merged.styles if s not in _MEDIA]
        if style not in merged.styles:
            merged.styles.append(style)
    changes.append("style " + ", ".join(styles))
    return True


def _apply_size(text: str, merged: Constraints, changes: list[str], refinement: bool) -> None:
    size = _SIZE_RE.search(text)
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
    if _BIGGER_RE.search(text):
        factor = 1.5
    elif _SMALLER_RE.search(text):
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
    steps = _STEPS_RE.search(text)
    current_steps = int((current_api or {}).get("sampling_steps") or merged.steps or 25)
    if steps:
        merged.steps = int(steps.group(1) or steps.group(2))
        changes.append(f"{merged.steps} steps")
    elif _FASTER_RE.search(text):
        merged.steps = max(STEPS_RANGE[0] + 7, round(current_steps * 0.6))
        changes.append(f"faster ({current_steps} -> {merged.steps} steps)")
    elif _SLOWER_RE.search(text):
        merged.steps = min(STEPS_RANGE[1], round(current_steps * 1.5))
        changes.append(f"more steps ({current_steps} -> {merged.steps})")
    cfg = _CFG_RE.search(text)
    if cfg:
        merged.cfg_scale = float(cfg.group(1))
        changes.append(f"cfg {merged.cfg_scale:g}")
    for name in sorted(CANONICAL_SAMPLERS, key=len, reverse=True):
        if re.search(rf"(?<!\w){re.escape(name)}(?!\w)", text, re.IGNORECASE):
            merged.sampler = name
            changes.append(f"sampler {name}")
            break
    seed = _SEED_RE.search(text)
    if seed:
        merged.seed = int(seed.group(1))
        changes.append(f"seed {merged.seed}")


def _apply_content(text: str, merged: Constraints, changes: list[str]) -> None:
    added = _ADD_RE.match(text)
    if added:
        merged.prompt = f"{merged.prompt}, {added.group(1)}"
        changes.append(f"added {added.group(1)}")
    for match in _WITHOUT_RE.finditer(text):
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
