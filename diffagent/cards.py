"""Model-card schema: one card per Civitai model version, the unit the index and planner work on."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from diffagent.base_models import BaseModelName, ModelType

_LINE_BREAKS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


def one_line(text: str) -> str:
    """`text` on one line: line breaks and other control characters become one space, trimmed."""
    return _LINE_BREAKS.sub(" ", text).strip()


class CardStats(BaseModel):
    """Community statistics of the version (and its model)."""

    model_config = ConfigDict(extra="forbid")

    downloads: int = Field(default=0, description="Version download count.")
    rating: float = Field(default=0.0, description="Average rating, 0-5.")
    rating_count: int = Field(default=0, description="Number of ratings.")
    favorites: int = Field(default=0, description="Model favourite count.")
    model_downloads: int = Field(default=0, description="Download count of the whole model.")


class CardFile(BaseModel):
    """The version's primary file: what a user downloads and the generator loads."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="File name, e.g. 'dreamshaper_8.safetensors'.")
    format: str = Field(description="Civitai format: SafeTensor, PickleTensor, Diffusers, Other.")
    size_kb: float = Field(default=0.0, description="Size in KiB.")
    sha256: str = Field(description="Upper-case hex SHA256 of the file.")
    autov2: str | None = Field(default=None, description="A1111 short hash (first 10 of SHA256).")
    url: str = Field(description="Download URL.")

    @field_validator("name")
    @classmethod
    def _one_line(cls, value: str) -> str:
        return one_line(value)


class RecommendedParams(BaseModel):
    """Generation parameters recommended for the version: statistics over its sample images."""

    model_config = ConfigDict(extra="forbid")

    width: int
    height: int
    sampling_method: str
    sampling_steps: int
    cfg_scale: float
    clip_skip: int | None = None
    negative_prompt: str = Field(default="", description="Most common negative prompt, if any.")
    lora_weight: float | None = Field(default=None, description="Typical weight, for a LoRA.")
    n_images: int = Field(default=0, description="Sample images the statistics come from.")
    base_checkpoint_version_id: int | None = Field(
        default=None, description="For a LoRA: its sample images' most common base checkpoint."
    )


class ModelCard(BaseModel):
    """One Civitai model version: catalog facts plus a reconstructed description."""

    model_config = ConfigDict(extra="forbid")

    version_id: int = Field(description="Civitai model-version id (the card's key).")
    model_id: int = Field(description="Civitai model id.")
    air: str = Field(description="AIR URN, e.g. urn:air:sd1:checkpoint:civitai:4384@128713.")
    name: str = Field(description="Model name.")
    version_name: str = Field(default="", description="Version name, e.g. 'v8'.")
    type: ModelType
    base_model: BaseModelName
    trigger_words: list[str] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)
    keywords: list[str] = Field(
        default_factory=list, description="Distinctive terms of the sample prompts (TF-IDF)."
    )
    description: str = Field(description="Description reconstructed by the project, not Civitai's.")
    stats: CardStats = Field(default_factory=CardStats)
    file: CardFile
    recommended: RecommendedParams
    created_at: str | None = None

    @field_validator("name", "version_name")
    @classmethod
    def _one_line(cls, value: str) -> str:
        return one_line(value)

    @property
    def display_name(self) -> str:
        """Name and version, as people say it ('DreamShaper v8')."""
        return f"{self.name} {self.version_name}".strip()


def read_cards(path: Path) -> list[ModelCard]:
    """Read cards from a JSON Lines file."""
    return list(iter_cards(path))


def iter_cards(path: Path) -> Iterator[ModelCard]:
    """Iterate over cards in a JSON Lines file."""
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                yield ModelCard.model_validate_json(line)


def write_cards(cards: Iterable[ModelCard], path: Path) -> int:
    """Write cards as JSON Lines; return how many were written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with path.open("w", encoding="utf-8") as handle:
        for card in cards:
            handle.write(json.dumps(card.model_dump(mode="json"), ensure_ascii=False) + "\n")
            count += 1
    return count
