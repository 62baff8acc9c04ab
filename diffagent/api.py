"""The T2I API: the model choice and generation parameters the agent emits, with validation."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from diffagent.base_models import (
    BASE_MODELS,
    CFG_RANGE,
    CLIP_SKIP_RANGE,
    LORA_WEIGHT_RANGE,
    MODEL_TYPES,
    STEPS_RANGE,
    BaseModelName,
    ModelType,
)
from diffagent.samplers import CANONICAL_SAMPLERS

__all__ = [
    "BASE_MODELS",
    "MODEL_TYPES",
    "BaseModelName",
    "CheckpointRef",
    "LoraRef",
    "ModelType",
    "T2IApi",
]


class LoraRef(BaseModel):
    """A LoRA applied on top of the checkpoint."""

    model_config = ConfigDict(extra="forbid")

    version_id: int = Field(description="Civitai model-version id of the LoRA.")
    name: str = Field(description="Display name of the LoRA.")
    weight: float = Field(default=0.8, description="LoRA scale (A1111 `<lora:name:weight>`).")
    base_model: BaseModelName | None = Field(
        default=None, description="Base model the LoRA was trained for, when known."
    )

    @field_validator("weight")
    @classmethod
    def _weight_in_range(cls, value: float) -> float:
        low, high = LORA_WEIGHT_RANGE
        if not low <= value <= high:
            raise ValueError(f"LoRA weight {value} is outside [{low}, {high}]")
        return value


class CheckpointRef(BaseModel):
    """The base checkpoint a LoRA runs on."""

    model_config = ConfigDict(extra="forbid")

    version_id: int = Field(description="Civitai model-version id of the checkpoint.")
    name: str = Field(description="Display name of the checkpoint.")


class T2IApi(BaseModel):
    """One text-to-image call: the paper's fields plus ids, LoRAs, prompt and seed.

    `model`, `model_id`, `version_id` and `type` name the catalog card that was selected (a
    checkpoint or a LoRA). For a LoRA card, `checkpoint` names the base checkpoint it runs on and
    `loras` holds the LoRA itself with its weight (plus any others).
    """

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="Name of the selected model (catalog card).")
    type: ModelType = Field(description="Card type: Checkpoint or LORA.")
    base_model: BaseModelName = Field(description="Base architecture: SD 1.5 or SDXL 1.0.")
    width: int = Field(description="Image width in pixels, a multiple of 8.")
    height: int = Field(description="Image height in pixels, a multiple of 8.")
    sampling_method: str = Field(description="A1111 sampler name, e.g. 'DPM++ 2M Karras'.")
    sampling_steps: int = Field(description="Denoising steps, 1-150.")
    cfg_scale: float = Field(description="Classifier-free guidance scale, 1-30.")
    model_description: str = Field(default="", description="Catalog description of the model.")
    model_id: int | None = Field(default=None, description="Civitai model id.")
    version_id: int | None = Field(default=None, description="Civitai model-version id.")
    air: str | None = Field(default=None, description="Civitai AIR URN of the version.")
    checkpoint: CheckpointRef | None = Field(
        default=None, description="Base checkpoint for a LoRA card; None for a checkpoint card."
    )
    loras: list[LoraRef] = Field(default_factory=list, description="LoRAs with weights.")
    prompt: str = Field(default="", description="Positive prompt.")
    negative_prompt: str = Field(default="", description="Negative prompt.")
    seed: int | None = Field(default=None, description="Base seed; k seeds count up from it.")
    clip_skip: int | None = Field(default=None, description="CLIP skip (A1111 convention, 1=none).")

    @field_validator("sampling_method")
    @classmethod
    def _known_sampler(cls, value: str) -> str:
        if value not in CANONICAL_SAMPLERS:
            raise ValueError(f"unknown sampler {value!r}; allowed: {', '.join(CANONICAL_SAMPLERS)}")
        return value

    @field_validator("sampling_steps")
    @classmethod
    def _steps_in_range(cls, value: int) -> int:
        low, high = STEPS_RANGE
        if not low <= value <= high:
            raise ValueError(f"sampling_steps {value} is outside [{low}, {high}]")
        return value

    @field_validator("cfg_scale")
    @classmethod
    def _cfg_in_range(cls, value: float) -> float:
        low, high = CFG_RANGE
        if not low <= value <= high:
            raise ValueError(f"cfg_scale {value} is outside [{low}, {high}]")
        return value

    @field_validator("clip_skip")
    @classmethod
    def _clip_skip_in_range(cls, value: int | None) -> int | None:
        low, high = CLIP_SKIP_RANGE
        if value is not None and not low <= value <= high:
            raise ValueError(f"clip_skip {value} is outside [{low}, {high}]")
        return value

    @model_validator(mode="after")
    def _check_size_and_loras(self) -> T2IApi:
        low, high = BASE_MODELS[self.base_model].size_range
        for axis, value in (("width", self.width), ("height", self.height)):
            if value % 8 != 0:
                raise ValueError(f"{axis} {value} is not a multiple of 8")
            if not low <= value <= high:
                raise ValueError(f"{axis} {value} is outside [{low}, {high}] for {self.base_model}")
        for lora in self.loras:
            if lora.base_model is not None and lora.base_model != self.base_model:
                raise ValueError(
                    f"LoRA {lora.name!r} is for {lora.base_model}, "
                    f"not the checkpoint's {self.base_model}"
                )
        return self
