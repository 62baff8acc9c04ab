"""The one way to turn a catalog card (and the conversation's constraints) into a T2I API.

Every planning mode and every repair starts from `card_params` (the card's recommended values,
snapped and clamped into the valid ranges) and `card_api`, so the same card under the same
constraints always gets the same parameters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from diffagent.agent.understand import Constraints, target_size
from diffagent.api import CheckpointRef, LoraRef, T2IApi
from diffagent.base_models import (
    BASE_MODELS,
    CFG_RANGE,
    CLIP_SKIP_RANGE,
    LORA_WEIGHT_RANGE,
    STEPS_RANGE,
    clamp,
    is_valid_size,
    snap_size,
)
from diffagent.cards import ModelCard
from diffagent.samplers import DEFAULT_SAMPLER, normalize_sampler


@dataclass(frozen=True)
class CardParams:
    """A card's recommended generation parameters, each inside its valid range."""

    width: int
    height: int
    sampling_method: str
    sampling_steps: int
    cfg_scale: float
    clip_skip: int | None
    lora_weight: float
    negative_prompt: str


def recommended_size(card: ModelCard) -> tuple[int, int]:
    """The card's recommended size, snapped to multiples of 8 inside the base model's range."""
    default_w, default_h = BASE_MODELS[card.base_model].default_size
    rec = card.recommended
    return (
        snap_size(rec.width, default_w, card.base_model),
        snap_size(rec.height, default_h, card.base_model),
    )


def card_params(card: ModelCard) -> CardParams:
    """The card's recommended parameters, clamped into range (unknown samplers: the default)."""
    rec = card.recommended
    spec = BASE_MODELS[card.base_model]
    width, height = recommended_size(card)
    weight = rec.lora_weight if rec.lora_weight is not None else lora_tag_weight(card)
    weight = weight if weight is not None else spec.default_lora_weight
    return CardParams(
        width=width,
        height=height,
        sampling_method=normalize_sampler(rec.sampling_method) or DEFAULT_SAMPLER,
        sampling_steps=int(clamp(rec.sampling_steps or spec.default_steps, STEPS_RANGE)),
        cfg_scale=float(clamp(rec.cfg_scale or spec.default_cfg, CFG_RANGE)),
        clip_skip=int(clamp(rec.clip_skip, CLIP_SKIP_RANGE)) if rec.clip_skip else None,
        lora_weight=float(clamp(weight, LORA_WEIGHT_RANGE)),
        negative_prompt=rec.negative_prompt,
    )


def card_api(
    card: ModelCard,
    constraints: Constraints | None = None,
    *,
    size: tuple[int, int] | None = None,
    checkpoint: ModelCard | None = None,
) -> T2IApi:
    """A valid T2I API for `card`: its parameters, then the constraints' explicit values.

    A LoRA card becomes the LoRA at its typical weight on `checkpoint` (when given and of the
    same base model). `size` overrides the card's size unless the constraints ask for one.
    """
    cons = constraints or Constraints()
    params = card_params(card)
    width, height = size or (params.width, params.height)
    wanted = target_size(cons, card.base_model)
    if wanted is not None and is_valid_size(wanted[0], wanted[1], card.base_model):
        width, height = wanted
    loras: list[LoraRef] = []
    checkpoint_ref = None
    if card.type == "LORA":
        loras.append(
            LoraRef(
                version_id=card.version_id,
                name=card.name,
                weight=params.lora_weight,
                base_model=card.base_model,
            )
        )
        if checkpoint is not None and checkpoint.base_model == card.base_model:
            checkpoint_ref = CheckpointRef(version_id=checkpoint.version_id, name=checkpoint.name)
    prompt = with_trigger_words(cons.query, card)
    return T2IApi(
        model=card.name,
        type=card.type,
        base_model=card.base_model,
        width=width,
        height=height,
        sampling_method=cons.sampler or params.sampling_method,
        sampling_steps=int(clamp(cons.steps, STEPS_RANGE)) if cons.steps else params.sampling_steps,
        cfg_scale=float(clamp(cons.cfg_scale, CFG_RANGE)) if cons.cfg_scale else params.cfg_scale,
        model_description=card.description,
        model_id=card.model_id,
        version_id=card.version_id,
        air=card.air,
        checkpoint=checkpoint_ref,
        loras=loras,
        prompt=prompt,
        negative_prompt=join_negative(
            cons.negative_prompt, params.negative_prompt, keep_out=prompt
        ),
        seed=cons.seed if cons.seed is not None and cons.seed >= 0 else None,
        clip_skip=params.clip_skip,
    )


_LORA_TAG_RE = re.compile(r"<(?:lora:)?[^<>:]+:(\d+(?:\.\d+)?)>", re.IGNORECASE)
_PERSON_RE = re.compile(
    r"\b(girls?|boys?|wom[ae]n|m[ae]n|person|people|portrait|character|lady|guy|child|kid|face|"
    r"1girl|1boy|knight|warrior|wizard|witch|princess|prince|king|queen|soldier|samurai|elf|"
    r"he|she|selfie|couple)\b",
    re.IGNORECASE,
)
_CHARACTER_TRIGGER = ("char", "portrait", "girl", "boy", "woman", "man", "person", "face", "solo")
_SCENE_TRIGGER = ("scen", "landscape", "background", "building", "city", "street", "interior")


def trigger_groups(card: ModelCard) -> list[str]:
    """The card's trigger-word groups that belong in a prompt (short, no `<lora:...>` tags)."""
    groups = []
    for trigger in card.trigger_words:
        text = _LORA_TAG_RE.sub("", trigger).strip(" ,")
        if text and len(text.split()) <= 5 and text not in groups:
            groups.append(text)
    return groups


def lora_tag_weight(card: ModelCard) -> float | None:
    """The weight of the card's own `<lora:name:w>` trigger or keyword, when it has one."""
    for text in [*card.trigger_words, *card.keywords]:
        match = _LORA_TAG_RE.search(text)
        if match:
            return float(match.group(1))
    return None


def _group_kind(group: str) -> str:
    words = re.findall(r"[a-z0-9]+", group.lower())
    if any(w.startswith(_CHARACTER_TRIGGER) or w.endswith("char") for w in words):
        return "character"
    if any(w.startswith(_SCENE_TRIGGER) or w.endswith("scape") for w in words):
        return "scene"
    return "other"


def relevant_triggers(prompt: str, card: ModelCard) -> list[str]:
    """The trigger groups of `card` that fit `prompt`: one concept, never a character for a scene.

    A single group is always used. Of several, the one sharing most words with the prompt wins;
    a character group only when the prompt shows a person, a scene group only when it does not.
    """
    groups = trigger_groups(card)
    if len(groups) <= 1:
        return groups
    prompt_words = set(re.findall(r"[a-z0-9]+", prompt.lower()))
    person = bool(_PERSON_RE.search(prompt))

    def fit(group: str) -> float:
        shared = len(set(re.findall(r"[a-z0-9]+", group.lower())) & prompt_words)
        kind = _group_kind(group)
        if kind == "character":
            return shared + (1.0 if person else -5.0)
        if kind == "scene":
            return shared + (-1.0 if person else 1.0)
        return float(shared)

    best = max(groups, key=fit)  # ties keep the card's order (its first group)
    return [best] if fit(best) > -5.0 else []


def with_trigger_words(prompt: str, card: ModelCard) -> str:
    """The prompt with the card's relevant trigger words in front when it has none of them."""
    groups = trigger_groups(card)
    if not groups or any(g.lower() in prompt.lower() for g in groups):
        return prompt
    chosen = relevant_triggers(prompt, card)
    lower = prompt.lower()
    # Civitai triggers are often comma lists that repeat a word ("zaum, a", "zaum, b").
    words = dict.fromkeys(w.strip() for t in chosen for w in t.split(",") if w.strip())
    words = {
        w: None for w in words if not re.search(rf"(?<!\w){re.escape(w.lower())}(?!\w)", lower)
    }
    return ", ".join([*words, prompt]) if prompt else ", ".join(words)


def join_negative(*parts: str, keep_out: str = "") -> str:
    """Negative prompt items, deduplicated, without the ones the prompt asks for ("anime")."""
    asked = set(re.findall(r"[a-z0-9]+", keep_out.lower()))
    seen: list[str] = []
    for part in parts:
        for item in (p.strip() for p in part.split(",")):
            bare = re.sub(r"[()\[\]]|:[\d.]+", "", item).strip().lower()
            if not item or item.lower() in {s.lower() for s in seen}:
                continue
            if bare and " " not in bare and bare in asked:
                continue  # a one-word negative the user asked for in the prompt
            seen.append(item)
    return ", ".join(seen)
