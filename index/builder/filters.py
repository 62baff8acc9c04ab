"""Model- and image-level filters of the catalog build, each configurable, with per-stage counts."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from tqdm import tqdm

from diffagent.base_models import BASE_MODELS, MODEL_TYPES
from diffagent.index.builder.civitai import RawItem, file_format, file_hashes, primary_file

ImageNsfw = Literal["None", "Soft", "Mature", "X"]
FILE_FORMATS: tuple[str, ...] = ("SafeTensor", "PickleTensor", "Diffusers", "Other")

# Words that mark an explicit prompt even when the uploader rated the image "None".
DEFAULT_NSFW_TERMS: tuple[str, ...] = (
    "nsfw", "nude", "nudity", "naked", "nipple", "nipples", "areola", "areolae", "pussy",
    "vagina", "vulva", "labia", "clitoris", "penis", "cock", "dick", "testicles", "genitals",
    "genitalia", "sex", "sexual", "intercourse", "cum", "cumshot", "semen", "ejaculation",
    "orgasm", "topless", "bottomless", "hentai", "porn", "porno", "pornographic", "erotic",
    "erotica", "fellatio", "blowjob", "handjob", "paizuri", "masturbation", "masturbating",
    "ahegao", "anus", "anal", "bdsm", "bondage", "shirtlift", "exposed breasts", "bare breasts",
    "breasts out", "no panties", "no bra", "spread legs", "spread pussy", "loli", "shota",
    "lewd", "uncensored", "pubic", "pubic hair", "cameltoe", "pantyshot", "upskirt", "undress",
    "undressing", "futa", "futanari",
)  # fmt: skip


class FilterConfig(BaseModel):
    """Which Civitai model versions and sample images the catalog keeps."""

    model_config = ConfigDict(extra="forbid")

    types: list[str] = Field(default=["Checkpoint", "LORA"], description="Model types kept.")
    base_models: list[str] = Field(default=["SD 1.5", "SDXL 1.0"], description="Bases kept.")
    allow_nsfw_models: bool = Field(default=False, description="Keep models flagged nsfw.")
    allow_poi: bool = Field(default=True, description="Keep models of real persons (poi).")
    image_nsfw: list[ImageNsfw] = Field(default=["None"], description="Image ratings kept.")
    prompt_guard: bool = Field(
        default=True,
        description="Drop images whose prompt has explicit words, models whose name has them "
        "and LoRAs whose tags or trigger words have them (Civitai's model flag misses some).",
    )
    nsfw_terms: list[str] = Field(default=list(DEFAULT_NSFW_TERMS))
    formats: list[str] = Field(default=["SafeTensor"], description="Primary-file formats kept.")
    min_model_downloads: int = Field(default=1000, ge=0)
    min_version_downloads: int = Field(default=0, ge=0)
    min_rating: float = Field(default=0.0, ge=0.0, le=5.0)
    min_rating_count: int = Field(default=0, ge=0)
    dedupe_files: bool = Field(default=True, description="One version per primary-file SHA256.")

    @field_validator("types")
    @classmethod
    def _known_types(cls, value: list[str]) -> list[str]:
        return _check_choices("type", value, MODEL_TYPES)

    @field_validator("base_models")
    @classmethod
    def _known_bases(cls, value: list[str]) -> list[str]:
        return _check_choices("base model", value, tuple(BASE_MODELS))

    @field_validator("formats")
    @classmethod
    def _known_formats(cls, value: list[str]) -> list[str]:
        return _check_choices("file format", value, FILE_FORMATS)


def _check_choices(what: str, value: list[str], allowed: tuple[str, ...]) -> list[str]:
    bad = [item for item in value if item not in allowed]
    if bad:
        raise ValueError(f"unknown {what} {bad[0]!r}; allowed: {', '.join(allowed)}")
    if not value:
        raise ValueError(f"at least one {what} is needed; allowed: {', '.join(allowed)}")
    return value


@dataclass
class StageCounts:
    """Counts after each filter stage, in order (the paper's Figure 2)."""

    models: dict[str, int] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)
    images: dict[str, int] = field(default_factory=dict)

    def add(self, table: dict[str, int], stage: str, amount: int = 1) -> None:
        """Add `amount` to one stage of a table, keeping first-seen stage order."""
        table[stage] = table.get(stage, 0) + amount


@dataclass
class SelectedVersion:
    """A model version that passed the model-level filters, with its kept sample images."""

    model: RawItem
    version: RawItem
    file: RawItem
    images: list[RawItem]

    @property
    def version_id(self) -> int:
        """Civitai model-version id."""
        return int(self.version["id"])

    @property
    def downloads(self) -> int:
        """Version download count."""
        return int((self.version.get("stats") or {}).get("downloadCount") or 0)


class PromptGuard:
    """Flags prompts containing any of a list of explicit words or phrases (whole words)."""

    def __init__(self, terms: Iterable[str]) -> None:
        words = sorted({t.strip().lower() for t in terms if t.strip()}, key=len, reverse=True)
        alternatives = "|".join(re.escape(w).replace(r"\ ", r"[\s_]+") for w in words)
        self._pattern = (
            re.compile(rf"(?<![a-z0-9])(?:{alternatives})(?![a-z0-9])") if words else None
        )

    def is_explicit(self, text: str) -> bool:
        """Whether the text contains a guarded term."""
        return bool(self._pattern and self._pattern.search(text.lower()))


VERSION_STAGES = ("input", "type", "base_model", "nsfw_model", "availability", "quality")


def select_versions(
    models: Iterable[RawItem], config: FilterConfig, counts: StageCounts, *, progress: bool = True
) -> list[SelectedVersion]:
    """Apply every model-level and image-level filter; record counts after each stage."""
    guard = PromptGuard(config.nsfw_terms if config.prompt_guard else [])
    selected: list[SelectedVersion] = []
    for stage in VERSION_STAGES:
        counts.models.setdefault(stage, 0)
        counts.versions.setdefault(stage, 0)
    for model in tqdm(models, desc="filter models", unit=" models", disable=not progress):
        for version in model.get("modelVersions") or []:
            passed = _version_stages(model, version, config, guard)
            for stage in passed:
                counts.add(counts.versions, stage)
            if len(passed) == len(VERSION_STAGES):
                file = primary_file(version)
                assert file is not None  # availability checked it
                images = _keep_images(version, config, guard, counts)
                selected.append(SelectedVersion(model, version, file, images))
        _count_models(model, config, guard, counts)
    kept = _dedupe(selected, config, counts)
    counts.models["duplicates"] = len({s.model["id"] for s in kept})
    return kept


def _version_stages(
    model: RawItem, version: RawItem, config: FilterConfig, guard: PromptGuard
) -> list[str]:
    """The stages a version passes, in order, stopping at the first it fails."""
    passed = ["input"]
    if model.get("type") not in config.types:
        return passed
    passed.append("type")
    if version.get("baseModel") not in config.base_models:
        return passed
    passed.append("base_model")
    if (model.get("nsfw") and not config.allow_nsfw_models) or (
        model.get("poi") and not config.allow_poi
    ):
        return passed
    # A LoRA is one concept, so its tags and trigger words say what it is for; a checkpoint is
    # general-purpose ("nsfw" among its tags or trigger words says what else it can do).
    texts = [model.get("name")]
    if model.get("type") == "LORA":
        texts += [*(model.get("tags") or []), *(version.get("trainedWords") or [])]
    if any(guard.is_explicit(str(text)) for text in texts if text):
        return passed
    passed.append("nsfw_model")
    if not _available(version, config):
        return passed
    passed.append("availability")
    if not _good_enough(model, version, config):
        return passed
    passed.append("quality")
    return passed


def _count_models(
    model: RawItem, config: FilterConfig, guard: PromptGuard, counts: StageCounts
) -> None:
    """Count a model at the deepest stage any of its versions reached."""
    depth = max(
        (len(_version_stages(model, v, config, guard)) for v in model.get("modelVersions") or []),
        default=1,
    )
    for stage in VERSION_STAGES[:depth]:
        counts.add(counts.models, stage)


def _available(version: RawItem, config: FilterConfig) -> bool:
    """A primary file in an allowed format with a SHA256 and a download URL."""
    file = primary_file(version)
    if file is None or file_format(file) not in config.formats:
        return False
    return bool(file_hashes(file).get("SHA256")) and bool(
        file.get("downloadUrl") or version.get("downloadUrl")
    )


def _good_enough(model: RawItem, version: RawItem, config: FilterConfig) -> bool:
    """Community-statistics thresholds (model downloads, version downloads, rating)."""
    model_stats = model.get("stats") or {}
    version_stats = version.get("stats") or {}
    return (
        int(model_stats.get("downloadCount") or 0) >= config.min_model_downloads
        and int(version_stats.get("downloadCount") or 0) >= config.min_version_downloads
        and float(model_stats.get("rating") or 0.0) >= config.min_rating
        and int(model_stats.get("ratingCount") or 0) >= config.min_rating_count
    )


def _keep_images(
    version: RawItem, config: FilterConfig, guard: PromptGuard, counts: StageCounts
) -> list[RawItem]:
    """Sample images rated within `image_nsfw` whose prompt passes the guard."""
    kept = []
    for image in version.get("images") or []:
        counts.add(counts.images, "input")
        if image.get("nsfw") not in config.image_nsfw:
            continue
        counts.add(counts.images, "nsfw_image")
        prompt = str((image.get("meta") or {}).get("prompt") or "")
        if guard.is_explicit(prompt):
            continue
        counts.add(counts.images, "prompt_guard")
        kept.append(image)
    return kept


def _dedupe(
    selected: list[SelectedVersion], config: FilterConfig, counts: StageCounts
) -> list[SelectedVersion]:
    """Drop repeated version ids (first kept) and repeated files (most downloaded kept)."""
    by_id: dict[int, SelectedVersion] = {}
    for item in selected:
        by_id.setdefault(item.version_id, item)
    kept = list(by_id.values())
    if config.dedupe_files:
        by_file: dict[str, SelectedVersion] = {}
        for item in sorted(kept, key=lambda s: (-s.downloads, s.version_id)):
            by_file.setdefault(file_hashes(item.file)["SHA256"], item)
        winners = {id(item) for item in by_file.values()}
        kept = [item for item in kept if id(item) in winners]
    counts.versions["duplicates"] = len(kept)
    return kept
