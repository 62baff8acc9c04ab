"""The registry of base-model facts (sizes, AIR ecosystem, pipeline, defaults) and their helpers.

Every other module reads base-model facts from `BASE_MODELS` only, so adding a base model is one
entry here plus its packaged pipeline config folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

BaseModelName = Literal["SD 1.5", "SDXL 1.0"]
ModelType = Literal["Checkpoint", "LORA"]
Aspect = Literal["square", "portrait", "landscape"]

MODEL_TYPES: tuple[str, ...] = ("Checkpoint", "LORA")

STEPS_RANGE = (1, 150)
CFG_RANGE = (1.0, 30.0)
CLIP_SKIP_RANGE = (1, 12)
LORA_WEIGHT_RANGE = (-4.0, 4.0)

DEFAULT_STEPS = 25
DEFAULT_CFG = 7.0
DEFAULT_LORA_WEIGHT = 0.8
SIZE_MULTIPLE = 8
"""Sizes must be multiples of the VAE's downsampling factor."""


@dataclass(frozen=True, kw_only=True)
class BaseModelSpec:
    """What DiffAgent knows about one base architecture."""

    name: BaseModelName
    """Civitai's name of the base model."""
    air_ecosystem: str
    """The AIR URN ecosystem, e.g. urn:air:sd1:checkpoint:civitai:4384@128713."""
    config_folder: str
    """Folder of the packaged diffusers pipeline config (`tools/configs/<folder>`)."""
    pipeline_class: str
    """diffusers pipeline class that runs it."""
    size_range: tuple[int, int]
    """Inclusive pixel range of width and height."""
    aspect_sizes: dict[Aspect, tuple[int, int]]
    """(width, height) per aspect, near the resolution the model was trained at."""
    default_steps: int = DEFAULT_STEPS
    default_cfg: float = DEFAULT_CFG
    default_lora_weight: float = DEFAULT_LORA_WEIGHT

    @property
    def default_size(self) -> tuple[int, int]:
        """The square size."""
        return self.aspect_sizes["square"]


BASE_MODELS: dict[str, BaseModelSpec] = {
    "SD 1.5": BaseModelSpec(
        name="SD 1.5",
        air_ecosystem="sd1",
        config_folder="sd15",
        pipeline_class="StableDiffusionPipeline",
        size_range=(64, 2048),
        aspect_sizes={"square": (512, 512), "portrait": (512, 768), "landscape": (768, 512)},
    ),
    "SDXL 1.0": BaseModelSpec(
        name="SDXL 1.0",
        air_ecosystem="sdxl",
        config_folder="sdxl",
        pipeline_class="StableDiffusionXLPipeline",
        size_range=(64, 4096),
        aspect_sizes={
            "square": (1024, 1024),
            "portrait": (832, 1216),
            "landscape": (1216, 832),
        },
    ),
}
DEFAULT_BASE_MODEL = "SD 1.5"


def base_model_spec(name: str) -> BaseModelSpec:
    """The spec of a base model, or a one-line error listing the known ones."""
    try:
        return BASE_MODELS[name]
    except KeyError:
        raise ValueError(
            f"unknown base model {name!r}; allowed: {', '.join(BASE_MODELS)}"
        ) from None


def clamp(value: float, bounds: tuple[float, float]) -> float:
    """`value` limited to the inclusive `bounds`."""
    return min(bounds[1], max(bounds[0], value))


def snap_size(value: float | None, fallback: int, base_model: str) -> int:
    """A side length rounded to a multiple of 8 inside the base model's range (`fallback` if 0)."""
    low, high = base_model_spec(base_model).size_range
    snapped = round(value / SIZE_MULTIPLE) * SIZE_MULTIPLE if value else fallback
    return int(clamp(snapped, (low, high)))


def is_valid_size(width: object, height: object, base_model: str) -> bool:
    """Whether both sides are ints, multiples of 8, inside the base model's range."""
    low, high = base_model_spec(base_model).size_range
    return all(
        isinstance(side, int) and side % SIZE_MULTIPLE == 0 and low <= side <= high
        for side in (width, height)
    )
