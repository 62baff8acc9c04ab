"""Validate a planned T2I API against the catalog and repair every field that does not fit."""

from __future__ import annotations

import difflib
import json
import re
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from diffagent.agent.card_api import card_api, card_params, join_negative, with_trigger_words
from diffagent.agent.card_evidence import conflicting_media, is_adult, style_fit
from diffagent.agent.context import CardIndex
from diffagent.agent.understand import Constraints, target_size
from diffagent.agent.understand_style import find_styles
from diffagent.api import CheckpointRef, LoraRef, T2IApi
from diffagent.base_models import (
    BASE_MODELS,
    CFG_RANGE,
    CLIP_SKIP_RANGE,
    LORA_WEIGHT_RANGE,
    STEPS_RANGE,
    is_valid_size,
)
from diffagent.cards import ModelCard
from diffagent.index.catalog import Catalog
from diffagent.samplers import normalize_sampler

_KNOWN_FIELDS = set(T2IApi.model_fields)
_AIR_VERSION_RE = re.compile(r"@(\d+)\s*$")
UNKNOWN_PARAMETER = "unknown parameter, dropped"


class Repair(BaseModel):
    """One field the validator changed: what it was, what it became and why."""

    field: str
    before: str | None
    after: str | None
    reason: str


class ValidationResult(BaseModel):
    """A valid API of a real catalog card, with the repairs made to get there."""

    api: T2IApi
    card: ModelCard
    repairs: list[Repair] = Field(default_factory=list)
    hallucinated: bool = Field(description="The planned model matched no catalog card.")


def validate_and_repair(
    api: dict[str, Any] | T2IApi | None,
    catalog: Catalog,
    index: CardIndex | None = None,
    constraints: Constraints | None = None,
) -> ValidationResult:
    """Check every field of `api` against `catalog` and repair what is wrong.

    The model goes to its card (by version id, AIR, name, else the nearest name); base model
    and type come from the card and must meet `constraints`; parameters out of range or unknown
    go to the card's recommended values; the constraints' explicit values are applied last.
    """
    if len(catalog) == 0:
        raise ValueError("the catalog is empty; nothing to validate against")
    cons = constraints or Constraints()
    raw: dict[str, Any] = api.model_dump() if isinstance(api, T2IApi) else dict(api or {})
    repairs: list[Repair] = []

    card, hallucinated = _resolve_card(raw, catalog, index, cons, repairs)
    if any(repair.field == "model" for repair in repairs):
        raw["model"] = card.name  # recorded once, by the resolution
    allowed_card = _enforce_card_constraints(card, raw, catalog, index, cons, repairs)
    if allowed_card.version_id != card.version_id:
        # The planned parameters were for another model: start from the new card's own.
        raw = {key: raw[key] for key in ("prompt", "negative_prompt", "seed") if key in raw}
        card = allowed_card
    elif raw.get("base_model") not in (None, card.base_model):
        raw = {key: value for key, value in raw.items() if key not in ("width", "height")}
    fixed = _repair_fields(raw, card, catalog, cons, repairs)
    try:
        result = T2IApi.model_validate(fixed)
    except ValidationError as error:  # a combination the field checks let through
        fallback = card_api(card, cons)
        repairs.append(Repair(field="api", before=_short(fixed), after=None, reason=str(error)))
        result = fallback
    return ValidationResult(api=result, card=card, repairs=repairs, hallucinated=hallucinated)


def _resolve_card(
    raw: dict[str, Any],
    catalog: Catalog,
    index: CardIndex | None,
    cons: Constraints,
    repairs: list[Repair],
) -> tuple[ModelCard, bool]:
    """The card the plan names, and whether it named none (a hallucination)."""
    name = str(raw.get("model") or "").strip()
    by_id = catalog.get(_as_int(raw.get("version_id")) or -1)
    air = _AIR_VERSION_RE.search(str(raw.get("air") or ""))
    by_air = catalog.get(int(air.group(1))) if air else None
    by_name = catalog.by_name(name) if name else []
    for candidate in (by_id, by_air):
        if candidate is not None and (not name or _same_name(name, candidate)):
            return candidate, False
    if by_name:
        # Several versions share a model name: prefer the one whose base fits.
        wanted = cons.base_model or raw.get("base_model")
        by_name.sort(key=lambda c: (c.base_model != wanted, -c.stats.downloads))
        card = by_name[0]
        if by_id is not None and by_id.version_id != card.version_id:
            repairs.append(
                Repair(
                    field="version_id",
                    before=str(raw.get("version_id")),
                    after=str(card.version_id),
                    reason=f"version id belongs to {by_id.display_name!r}, not {name!r}",
                )
            )
        return card, False
    if by_id is not None or by_air is not None:
        card = by_id or by_air
        assert card is not None
        repairs.append(
            Repair(
                field="model",
                before=name or None,
                after=card.name,
                reason="name does not match the card of the version id",
            )
        )
        return card, False
    card = _nearest(name, catalog, index, cons, str(raw.get("prompt") or cons.query))
    repairs.append(
        Repair(
            field="model",
            before=name or None,
            after=card.display_name,
            reason="no catalog card has this name; nearest card by name and meaning",
        )
    )
    return card, True


def _nearest(
    name: str, catalog: Catalog, index: CardIndex | None, cons: Constraints, prompt: str
) -> ModelCard:
    """The card nearest to `name` within the constraints (prompt search when there is no name)."""
    allowed = _allowed(cons)
    if index is not None:
        filters = {"base_model": cons.base_model, "model_type": cons.model_type}
        hits = index.nearest_by_name(name, 5, **filters) if name else []
        if not hits and prompt:
            hits = index.query(prompt, 5, **filters)
        cards = [hit.card for hit in hits if allowed(hit.card)]
        if cards:
            return cards[0]
    pool = [card for card in catalog if allowed(card)] or list(catalog)
    if name:
        names = {card.display_name.lower(): card for card in pool}
        names.update({card.name.lower(): card for card in pool})
        close = difflib.get_close_matches(name.lower(), list(names), n=1, cutoff=0.0)
        if close:
            return names[close[0]]
    return max(pool, key=lambda card: card.stats.downloads)


def _allowed(cons: Constraints) -> Any:
    def allowed(card: ModelCard) -> bool:
        return (
            (cons.base_model is None or card.base_model == cons.base_model)
            and (cons.model_type is None or card.type == cons.model_type)
            and not (cons.no_lora and card.type == "LORA")
            and card.version_id not in cons.exclude_version_ids
            and (cons.allow_adult or not is_adult(card))
        )

    return allowed


def _enforce_card_constraints(
    card: ModelCard,
    raw: dict[str, Any],
    catalog: Catalog,
    index: CardIndex | None,
    cons: Constraints,
    repairs: list[Repair],
) -> ModelCard:
    """Swap the card for the nearest allowed one when it breaks a conversation constraint."""
    if _allowed(cons)(card):
        return card
    reasons = []
    if cons.base_model is not None and card.base_model != cons.base_model:
        reasons.append(f"base model must be {cons.base_model}")
    if (cons.model_type is not None and card.type != cons.model_type) or (
        cons.no_lora and card.type == "LORA"
    ):
        reasons.append(f"type must be {cons.model_type or 'Checkpoint'}")
    if card.version_id in cons.exclude_version_ids:
        reasons.append("you asked for another model")
    if is_adult(card) and not cons.allow_adult:
        reasons.append("adult-oriented models are not picked by default")
    swapped = _nearest(card.name, catalog, index, cons, str(raw.get("prompt") or cons.query))
    if not _allowed(cons)(swapped):
        raise ValueError(
            f"no catalog card meets the constraints ({'; '.join(reasons)}); "
            f"loosen them (base models present: {sorted({c.base_model for c in catalog})})"
        )
    repairs.append(
        Repair(
            field="model",
            before=card.display_name,
            after=swapped.display_name,
            reason="; ".join(reasons),
        )
    )
    return swapped


def _repair_fields(
    raw: dict[str, Any],
    card: ModelCard,
    catalog: Catalog | None,
    cons: Constraints,
    repairs: list[Repair],
) -> dict[str, Any]:
    """Every T2IApi field, taken from `raw` when valid, else from the card; constraints last."""
    rec = card_params(card)
    base = card.base_model

    def note(field: str, before: Any, after: Any, reason: str) -> None:
        if raw and before is not None:
            repairs.append(
                Repair(field=field, before=_short(before), after=_short(after), reason=reason)
            )

    for key in sorted(set(raw) - _KNOWN_FIELDS):
        note(key, raw[key], None, UNKNOWN_PARAMETER)

    out: dict[str, Any] = {
        "model": card.name,
        "type": card.type,
        "base_model": base,
        "model_id": card.model_id,
        "version_id": card.version_id,
        "air": card.air,
        "model_description": card.description,
    }
    for key in ("model", "type", "base_model", "model_id", "version_id"):
        before = raw.get(key)
        if (
            before is not None
            and str(before) != str(out[key])
            and not (key == "model" and _same_name(str(before), card))
        ):
            note(key, before, out[key], f"taken from the catalog card {card.display_name!r}")

    size = _valid_size(raw.get("width"), raw.get("height"), base)
    if size is None:
        size = (rec.width, rec.height)
        if "width" in raw or "height" in raw:
            note(
                "size",
                f"{raw.get('width')}x{raw.get('height')}",
                f"{size[0]}x{size[1]}",
                f"not a valid {base} size (multiples of 8 in {BASE_MODELS[base].size_range})",
            )
    wanted = target_size(cons, base)
    if wanted is not None:
        size = _valid_size(wanted[0], wanted[1], base) or size
    out["width"], out["height"] = size

    rec_sampler = rec.sampling_method
    sampler = normalize_sampler(str(raw["sampling_method"])) if raw.get("sampling_method") else None
    if sampler is None:
        note("sampling_method", raw.get("sampling_method"), rec_sampler, "unknown sampler")
    out["sampling_method"] = cons.sampler or sampler or rec_sampler

    rec_steps = rec.sampling_steps
    steps = _in_range(raw.get("sampling_steps"), STEPS_RANGE, int)
    if steps is None:
        note("sampling_steps", raw.get("sampling_steps"), rec_steps, f"outside {STEPS_RANGE}")
    out["sampling_steps"] = _in_range(cons.steps, STEPS_RANGE, int) or steps or rec_steps

    rec_cfg = rec.cfg_scale
    cfg = _in_range(raw.get("cfg_scale"), CFG_RANGE, float)
    if cfg is None:
        note("cfg_scale", raw.get("cfg_scale"), rec_cfg, f"outside {CFG_RANGE}")
    out["cfg_scale"] = _in_range(cons.cfg_scale, CFG_RANGE, float) or cfg or rec_cfg

    rec_clip = rec.clip_skip
    clip = _in_range(raw.get("clip_skip"), CLIP_SKIP_RANGE, int)
    if clip is None and raw.get("clip_skip") is not None:
        note("clip_skip", raw.get("clip_skip"), rec_clip, f"outside {CLIP_SKIP_RANGE}")
    out["clip_skip"] = clip if clip is not None else rec_clip

    out["prompt"] = with_trigger_words(cons.query or str(raw.get("prompt") or ""), card)
    out["negative_prompt"] = join_negative(
        cons.negative_prompt,
        str(raw.get("negative_prompt") or rec.negative_prompt or ""),
        keep_out=out["prompt"],
    )
    seed = cons.seed if cons.seed is not None else _as_int(raw.get("seed"))
    out["seed"] = seed if seed is not None and seed >= 0 else None

    out["checkpoint"], out["loras"] = _repair_resources(raw, card, catalog, cons, note)
    return out


def _repair_resources(
    raw: dict[str, Any], card: ModelCard, catalog: Catalog | None, cons: Constraints, note: Any
) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """The checkpoint (for a LoRA card) and LoRAs, each a real card of the same base model."""
    loras: list[dict[str, Any]] = []
    checkpoint: dict[str, Any] | None = None
    if card.type == "LORA":
        weight = card_params(card).lora_weight
        own = next(
            (
                lo
                for lo in raw.get("loras") or []
                if isinstance(lo, dict) and _as_int(lo.get("version_id")) == card.version_id
            ),
            None,
        )
        if own is not None:
            weight = _in_range(own.get("weight"), LORA_WEIGHT_RANGE, float) or weight
        loras.append(
            {
                "version_id": card.version_id,
                "name": card.name,
                "weight": weight,
                "base_model": card.base_model,
            }
        )
        checkpoint = _repair_checkpoint(raw.get("checkpoint"), card, catalog, cons, note)
    for item in raw.get("loras") or []:
        ref = _resolve_lora(item, card, catalog)
        if ref is None:
            note("loras", item, None, f"not a {card.base_model} LoRA of the catalog")
        elif ref["version_id"] != card.version_id and not cons.no_lora:
            loras.append(ref)
    return checkpoint, loras


def _repair_checkpoint(
    value: Any, card: ModelCard, catalog: Catalog | None, cons: Constraints, note: Any
) -> dict[str, Any] | None:
    """A real checkpoint of the LoRA's base model: the planned one if valid, else the usual one.

    Adult-oriented checkpoints are never a default base (unless NSFW is allowed).
    """
    if catalog is None:
        return None

    def usable(candidate: ModelCard | None) -> bool:
        return (
            candidate is not None
            and candidate.type == "Checkpoint"
            and candidate.base_model == card.base_model
            and (cons.allow_adult or not is_adult(candidate))
        )

    named = None
    if isinstance(value, dict):
        named = catalog.get(_as_int(value.get("version_id")) or -1)
        if named is None and value.get("name"):
            matches = catalog.by_name(str(value["name"]))
            named = matches[0] if matches else None
    if named is not None and usable(named):
        return CheckpointRef(version_id=named.version_id, name=named.name).model_dump()
    # The checkpoint the LoRA's sample images used (the LoRA carries the style); else the most
    # downloaded one that shows the asked styles, else the most downloaded.
    best = catalog.get(card.recommended.base_checkpoint_version_id or -1)
    if best is None or not usable(best):
        pool = [c for c in catalog if usable(c)]
        if not pool:
            return None
        styles = find_styles(cons.query)
        fitting = [c for c in pool if not conflicting_media(c, styles)] or pool
        best = max(fitting, key=lambda c: (style_fit(c, styles) >= 2.0, c.stats.downloads))
    if value is not None:
        note("checkpoint", value, best.name, f"not a usable {card.base_model} checkpoint")
    return CheckpointRef(version_id=best.version_id, name=best.name).model_dump()


def _resolve_lora(item: Any, card: ModelCard, catalog: Catalog | None) -> dict[str, Any] | None:
    if catalog is None or not isinstance(item, dict):
        return None
    found = catalog.get(_as_int(item.get("version_id")) or -1)
    if found is None and item.get("name"):
        matches = catalog.by_name(str(item["name"]))
        found = matches[0] if matches else None
    if found is None or found.type != "LORA" or found.base_model != card.base_model:
        return None
    weight = _in_range(item.get("weight"), LORA_WEIGHT_RANGE, float)
    if weight is None:
        weight = card_params(found).lora_weight
    return LoraRef(
        version_id=found.version_id, name=found.name, weight=weight, base_model=found.base_model
    ).model_dump()


def _valid_size(width: Any, height: Any, base: str) -> tuple[int, int] | None:
    w, h = _as_int(width), _as_int(height)
    if w is None or h is None or not is_valid_size(w, h, base):
        return None
    return w, h


def _in_range(value: Any, bounds: tuple[Any, Any], kind: type) -> Any:
    try:
        number = kind(value) if value is not None and not isinstance(value, bool) else None
    except (TypeError, ValueError):
        return None
    if number is None or not bounds[0] <= number <= bounds[1]:
        return None
    return number


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return int(number) if number == int(number) else None


def _same_name(name: str, card: ModelCard) -> bool:
    lower = name.strip().lower()
    return lower in {card.name.lower(), card.display_name.lower()}


def _short(value: Any) -> str | None:
    if value is None:
        return None
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= 200 else text[:197] + "..."
