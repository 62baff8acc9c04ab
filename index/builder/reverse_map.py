"""Reverse mapping: a model's sample image becomes an instruction/API pair, as DABench does."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from diffagent.base_models import (
    BASE_MODELS,
    CFG_RANGE,
    CLIP_SKIP_RANGE,
    DEFAULT_CFG,
    DEFAULT_LORA_WEIGHT,
    DEFAULT_STEPS,
    LORA_WEIGHT_RANGE,
    STEPS_RANGE,
    clamp,
    snap_size,
)
from diffagent.index.builder.civitai import RawItem, file_hashes
from diffagent.index.builder.filters import SelectedVersion
from diffagent.samplers import DEFAULT_SAMPLER, normalize_sampler

# A1111 extra-network tags: <lora:name:0.8>, <lyco:name>, <hypernet:name:1>, <locon:...>.
# An unclosed tag ("<lora:name:0.8, best quality") ends at the next comma.
EXTRA_NETWORK_TAG = re.compile(r"<\s*(?:lora|lyco|lycoris|locon|loha|hypernet)\s*:[^>,]*>?", re.I)
LORA_TAG = re.compile(
    r"<\s*(?:lora|lyco|lycoris|locon|loha)\s*:\s*([^:>]+?)\s*(?::\s*([^:>]*))?>", re.I
)
ADDNET_MODEL = re.compile(r"^(.*?)\s*\(([0-9a-fA-F]+)\)\s*$")

FILLED_FIELDS = ("size", "sampler", "steps", "cfg", "lora_weight")


class MappingConfig(BaseModel):
    """How sample images become pairs."""

    model_config = ConfigDict(extra="forbid")

    unresolved_base: Literal["drop", "default"] = Field(
        default="drop",
        description="LoRA images whose base checkpoint hash is not a catalog checkpoint: "
        "drop them, or keep them with the default checkpoint of their base model.",
    )
    default_checkpoints: dict[str, int] = Field(
        default_factory=dict,
        description="Base model -> checkpoint version id used for 'default'; "
        "the most downloaded catalog checkpoint of that base when absent.",
    )
    min_prompt_chars: int = Field(default=3, ge=1, description="Shorter prompts are dropped.")


def strip_extra_network_tags(prompt: str) -> str:
    """Remove <lora:...>/<lyco:...>/<hypernet:...> tags and tidy the commas and spaces left."""
    text = EXTRA_NETWORK_TAG.sub(" ", prompt)
    text = re.sub(r"[ \t]+", " ", text)
    text = re.sub(r"\s*,(\s*,)+", ",", text)  # collapse empty items
    text = re.sub(r" +,", ",", text)
    text = re.sub(r"(?m)^[\s,]+|[\s,]+$", "", text)
    return text.strip()


def parse_size(value: Any) -> tuple[int, int] | None:
    """Parse '512x768' into (width, height); None when absent or malformed."""
    match = re.fullmatch(r"\s*(\d{2,5})\s*[xX×]\s*(\d{2,5})\s*", str(value or ""))
    return (int(match[1]), int(match[2])) if match else None


def normalize_size(width: int, height: int, base_model: str) -> tuple[int, int]:
    """Round a size to multiples of 8 and clamp it into the base model's range."""
    low = BASE_MODELS[base_model].size_range[0]
    return snap_size(width, low, base_model), snap_size(height, low, base_model)


def parse_number(value: Any) -> float | None:
    """A finite number from an int, float or numeric string; None otherwise."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(str(value).strip())
    except ValueError:
        return None
    return number if math.isfinite(number) else None


@dataclass
class ParsedImage:
    """Generation facts read from one image's metadata (None: missing or unusable)."""

    image_id: int
    prompt: str
    negative_prompt: str
    size: tuple[int, int] | None
    sampler: str | None
    steps: int | None
    cfg: float | None
    clip_skip: int | None
    seed: int | None
    model_hash: str | None
    model_name: str | None
    lora_weight: float | None
    lora_names: list[str] = field(default_factory=list)


@dataclass
class RawPair:
    """One instruction/API pair before the card facts are attached."""

    image_id: int
    version_id: int
    prompt: str
    negative_prompt: str
    width: int
    height: int
    sampling_method: str
    sampling_steps: int
    cfg_scale: float
    clip_skip: int | None
    seed: int | None
    lora_weight: float | None
    checkpoint_version_id: int | None
    base_resolved: bool


def parse_image(image: RawItem, base_model: str, file_stem: str) -> ParsedImage:
    """Read and normalise the generation fields of one sample image."""
    meta = image.get("meta") or {}
    raw_prompt = str(meta.get("prompt") or "")
    size = parse_size(meta.get("Size"))
    steps = parse_number(meta.get("steps"))
    cfg = parse_number(meta.get("cfgScale"))
    clip = parse_number(meta.get("Clip skip"))
    seed = parse_number(meta.get("seed"))
    return ParsedImage(
        image_id=int(image["id"]),
        prompt=strip_extra_network_tags(raw_prompt),
        negative_prompt=strip_extra_network_tags(str(meta.get("negativePrompt") or "")),
        size=normalize_size(*size, base_model) if size else None,
        sampler=normalize_sampler(meta.get("sampler")),
        steps=int(clamp(round(steps), STEPS_RANGE)) if steps else None,
        cfg=round(clamp(cfg, CFG_RANGE), 2) if cfg else None,
        clip_skip=int(clamp(round(clip), CLIP_SKIP_RANGE)) if clip else None,
        seed=int(seed) if seed is not None and 0 <= seed < 2**63 else None,
        model_hash=_model_hash(meta),
        model_name=str(meta["Model"]) if meta.get("Model") else None,
        lora_weight=_lora_weight(raw_prompt, meta, file_stem),
        lora_names=[m[1].strip() for m in LORA_TAG.finditer(raw_prompt)],
    )


def _model_hash(meta: dict[str, Any]) -> str | None:
    """The checkpoint hash the image was made with ('Model hash' or a 'model' resource)."""
    value = meta.get("Model hash")
    if not value:
        for resource in meta.get("resources") or []:
            if isinstance(resource, dict) and resource.get("type") == "model":
                value = resource.get("hash")
                break
    text = str(value or "").strip().upper()
    return text if re.fullmatch(r"[0-9A-F]{8,64}", text) else None


def _lora_weight(raw_prompt: str, meta: dict[str, Any], file_stem: str) -> float | None:
    """The weight this image gave the LoRA whose file stem is `file_stem`, when it says."""
    stem = file_stem.lower()
    tags = [(m[1].strip(), m[2]) for m in LORA_TAG.finditer(raw_prompt)]
    candidates = [weight for name, weight in tags if name.lower() == stem]
    if not candidates:
        for resource in meta.get("resources") or []:
            if (
                isinstance(resource, dict)
                and resource.get("type") == "lora"
                and str(resource.get("name", "")).lower() == stem
            ):
                candidates.append(resource.get("weight"))
    if not candidates:
        for key, value in meta.items():
            match = ADDNET_MODEL.match(str(value)) if key.startswith("AddNet Model ") else None
            if match and match[1].lower() == stem:
                candidates.append(meta.get(f"AddNet Weight A {key.rsplit(' ', 1)[-1]}"))
    if not candidates and len(tags) == 1:
        candidates = [tags[0][1]]
    for candidate in candidates:
        weight = parse_number(candidate) if candidate not in (None, "") else 1.0
        if weight is not None:
            return round(clamp(weight, LORA_WEIGHT_RANGE), 3)
    return None


class CheckpointHashes:
    """Lookup of catalog checkpoints by file hash (SHA256, its prefix, AutoV1/V2) or file name.

    Every file of a kept checkpoint version counts (fp16/fp32 and pruned variants are the same
    version); a hash never matches across base models.
    """

    def __init__(self, checkpoints: Iterable[SelectedVersion]) -> None:
        self._by_hash: dict[str, tuple[int, str]] = {}
        self._by_name: dict[str, tuple[int, str]] = {}
        for item in sorted(checkpoints, key=lambda s: -s.downloads):  # popular wins collisions
            entry = (item.version_id, str(item.version["baseModel"]))
            for file in [item.file, *(item.version.get("files") or [])]:
                hashes = file_hashes(file)
                keys = {hashes.get("AUTOV1"), hashes.get("AUTOV2"), hashes.get("SHA256")}
                keys.add(hashes["SHA256"][:10] if "SHA256" in hashes else None)
                for key in keys:
                    if key:
                        self._by_hash.setdefault(key, entry)
                stem = PurePosixPath(str(file.get("name") or "")).stem.lower()
                if stem:
                    self._by_name.setdefault(stem, entry)

    def resolve(
        self, model_hash: str | None, base_model: str, model_name: str | None = None
    ) -> tuple[int | None, str]:
        """(checkpoint version id, how) for a hash or, failing that, a file name; (None, '')."""
        if model_hash:
            hit = self._by_hash.get(model_hash.upper()) or self._by_hash.get(
                model_hash[:10].upper()
            )
            if hit and hit[1] == base_model:
                return hit[0], "hash"
        if model_name:
            hit = self._by_name.get(str(model_name).strip().lower())
            if hit and hit[1] == base_model:
                return hit[0], "name"
        return None, ""


def most_common(values: Iterable[Any]) -> Any:
    """The most frequent non-None value (first seen wins ties), or None."""
    counter = Counter(v for v in values if v is not None)
    return counter.most_common(1)[0][0] if counter else None


def map_version(
    item: SelectedVersion,
    checkpoints: CheckpointHashes,
    config: MappingConfig,
    default_checkpoints: dict[str, int],
    counts: dict[str, int],
) -> list[RawPair]:
    """Turn a version's kept sample images into pairs; count drops and filled fields."""
    base_model = str(item.version["baseModel"])
    is_lora = item.model.get("type") == "LORA"
    stem = PurePosixPath(str(item.file.get("name", ""))).stem
    parsed = []
    for image in item.images:
        image_parsed = parse_image(image, base_model, stem)
        if len(image_parsed.prompt) < config.min_prompt_chars:
            counts["dropped_no_prompt"] = counts.get("dropped_no_prompt", 0) + 1
            continue
        parsed.append(image_parsed)
    common = {
        "size": most_common(p.size for p in parsed),
        "sampler": most_common(p.sampler for p in parsed),
        "steps": most_common(p.steps for p in parsed),
        "cfg": most_common(p.cfg for p in parsed),
        "lora_weight": most_common(p.lora_weight for p in parsed),
    }
    defaults = {
        "size": BASE_MODELS[base_model].default_size,
        "sampler": DEFAULT_SAMPLER,
        "steps": DEFAULT_STEPS,
        "cfg": DEFAULT_CFG,
        "lora_weight": DEFAULT_LORA_WEIGHT,
    }
    pairs = []
    for p in parsed:
        checkpoint_id: int | None = None
        resolved = True
        if is_lora:
            checkpoint_id, how = checkpoints.resolve(p.model_hash, base_model, p.model_name)
            if checkpoint_id is not None:
                counts[f"base_by_{how}"] = counts.get(f"base_by_{how}", 0) + 1
            else:
                resolved = False
                counts["unresolved_base"] = counts.get("unresolved_base", 0) + 1
                checkpoint_id = default_checkpoints.get(base_model)
                if config.unresolved_base == "drop" or checkpoint_id is None:
                    counts["dropped_unresolved_base"] = counts.get("dropped_unresolved_base", 0) + 1
                    continue
        values: dict[str, Any] = {
            "size": p.size,
            "sampler": p.sampler,
            "steps": p.steps,
            "cfg": p.cfg,
            "lora_weight": p.lora_weight if is_lora else 0.0,
        }
        for name, value in values.items():
            if value is None:
                source = "model" if common[name] is not None else "default"
                values[name] = common[name] if common[name] is not None else defaults[name]
                key = f"filled_{name}_from_{source}"
                counts[key] = counts.get(key, 0) + 1
        width, height = values["size"]
        pairs.append(
            RawPair(
                image_id=p.image_id,
                version_id=item.version_id,
                prompt=p.prompt,
                negative_prompt=p.negative_prompt,
                width=width,
                height=height,
                sampling_method=values["sampler"],
                sampling_steps=values["steps"],
                cfg_scale=values["cfg"],
                clip_skip=p.clip_skip,
                seed=p.seed,
                lora_weight=values["lora_weight"] if is_lora else None,
                checkpoint_version_id=checkpoint_id,
                base_resolved=resolved,
            )
        )
    return pairs
