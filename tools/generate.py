"""Image generation from a T2I API with diffusers: SD 1.5 / SDXL checkpoints, LoRAs, A1111 samplers.

Prompts are encoded the A1111 way (weights, BREAK, past 77 tokens; tools/prompt_embeds.py).

Pipelines are cached by checkpoint file, so switching LoRAs, sampler or any other parameter reuses
the loaded weights; LoRAs are loaded once as named adapters and switched with `set_adapters`.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from diffagent.api import T2IApi
from diffagent.base_models import base_model_spec
from diffagent.cards import ModelCard
from diffagent.tools.prompt_embeds import encode_prompts
from diffagent.tools.schedulers import make_scheduler, scheduler_spec
from diffagent.tools.store import MatchMode, ModelStore

Device = Literal["auto", "cpu", "cuda"]
DType = Literal["auto", "float32", "float16", "bfloat16"]


class GenerationConfig(BaseModel):
    """Where the weights are and how to run them."""

    model_config = ConfigDict(extra="forbid")

    model_store: Path = Field(description="Folder holding the user's Civitai downloads.")
    device: Device = Field(default="auto", description="cpu, cuda, or auto (cuda when present).")
    dtype: DType = Field(default="auto", description="auto: float16 on CUDA, float32 on CPU.")
    allow_pickle: bool = Field(default=False, description="Allow .ckpt/.pt/.bin pickle files.")
    verify_hash: bool = Field(default=True, description="Check SHA256 against the card.")
    match: MatchMode = Field(default="name_or_sha256", description="How files are found.")
    max_pipelines: int = Field(default=1, description="Checkpoints kept loaded at once.")
    max_loras: int = Field(default=8, description="LoRAs kept loaded per checkpoint.")
    show_progress: bool = Field(default=False, description="diffusers' per-step progress bar.")

    @field_validator("max_pipelines", "max_loras")
    @classmethod
    def _positive(cls, value: int) -> int:
        if value < 1:
            raise ValueError(f"must be >= 1, got {value}")
        return value


def resolve_device(device: Device) -> str:
    """The torch device name for a configured device ('auto' picks CUDA when available)."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but no CUDA device is available; use cpu")
    return device


def resolve_dtype(dtype: DType, device: str) -> Any:
    """The torch dtype for a configured dtype on a device."""
    import torch

    if dtype == "auto":
        return torch.float16 if device == "cuda" else torch.float32
    return getattr(torch, dtype)


def diffusers_clip_skip(a1111_clip_skip: int | None) -> int | None:
    """A1111 clip skip (1 = last layer) as diffusers' (None = last layer, 1 = one skipped)."""
    if a1111_clip_skip is None or a1111_clip_skip <= 1:
        return None
    return a1111_clip_skip - 1


class _Loaded:
    """One loaded pipeline with its default scheduler config and its loaded LoRA adapters."""

    def __init__(self, pipe: Any, scheduler_config: dict[str, Any]) -> None:
        self.pipe = pipe
        self.scheduler_config = scheduler_config
        self.adapters: OrderedDict[str, str] = OrderedDict()  # LoRA path -> adapter, LRU order
        self.counter = 0  # adapter names are never reused
        self.sampler: str | None = None
        self.active: tuple[tuple[str, ...], tuple[float, ...]] | None = None  # adapters in use


class Generator:
    """Turns a T2I API plus its cards into images; lazy: nothing loads before the first call."""

    def __init__(self, config: GenerationConfig) -> None:
        self.config = config
        self.store = ModelStore(
            config.model_store,
            match=config.match,
            allow_pickle=config.allow_pickle,
            verify_hash=config.verify_hash,
        )
        self._pipelines: OrderedDict[tuple[str, str], _Loaded] = OrderedDict()
        self._lock = threading.Lock()
        self.loads = 0  # checkpoint loads so far (the cache keeps this low)

    def clear(self, keep: int = 0) -> None:
        """Drop cached pipelines, oldest first, until `keep` remain; free GPU memory."""
        import torch

        while len(self._pipelines) > keep:
            self._pipelines.popitem(last=False)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def generate(
        self,
        api: T2IApi,
        seeds: list[int],
        checkpoint_card: ModelCard,
        lora_cards: list[ModelCard] | None = None,
    ) -> list[Any]:
        """Generate one PIL image per seed (same order) with the API's checkpoint, LoRAs, params."""
        api, loras = self._check_inputs(api, seeds, checkpoint_card, lora_cards or [])
        checkpoint = self.store.resolve(checkpoint_card)
        lora_paths = [(self.store.resolve(card), weight) for card, weight in loras]
        with self._lock:
            loaded = self._pipeline(checkpoint, checkpoint_card)
            self._set_loras(loaded, lora_paths)
            self._set_sampler(loaded, api.sampling_method)
            return self._run(loaded, api, seeds)

    def _check_inputs(
        self, api: T2IApi, seeds: list[int], checkpoint: ModelCard, lora_cards: list[ModelCard]
    ) -> tuple[T2IApi, list[tuple[ModelCard, float]]]:
        api = T2IApi.model_validate(api.model_dump())  # re-run validation on constructed objects
        scheduler_spec(api.sampling_method)
        if not seeds:
            raise ValueError("at least one seed is needed")
        if checkpoint.type != "Checkpoint":
            raise ValueError(
                f"checkpoint_card {checkpoint.display_name!r} is a {checkpoint.type}, "
                "not a Checkpoint"
            )
        if checkpoint.base_model != api.base_model:
            raise ValueError(
                f"checkpoint {checkpoint.display_name!r} is {checkpoint.base_model}, "
                f"but the API asks for {api.base_model}"
            )
        by_version = {card.version_id: card for card in lora_cards}
        loras: list[tuple[ModelCard, float]] = []
        for ref in api.loras:
            card = by_version.get(ref.version_id)
            if card is None:
                raise ValueError(
                    f"no card given for LoRA {ref.name!r} (version {ref.version_id}); "
                    f"cards given: {sorted(by_version) or 'none'}"
                )
            if card.base_model != api.base_model:
                raise ValueError(
                    f"LoRA {card.display_name!r} is for {card.base_model}, not {api.base_model}"
                )
            loras.append((card, ref.weight))
        return api, loras

    def _pipeline(self, path: Path, card: ModelCard) -> _Loaded:
        key = (str(path.resolve()), card.base_model)
        if key in self._pipelines:
            self._pipelines.move_to_end(key)
            return self._pipelines[key]
        if len(self._pipelines) >= self.config.max_pipelines:
            self.clear(keep=self.config.max_pipelines - 1)
        loaded = self._load(path, card.base_model)
        self._pipelines[key] = loaded
        self.loads += 1
        return loaded

    def _load(self, path: Path, base_model: str) -> _Loaded:
        import torch
        from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

        device = resolve_device(self.config.device)
        dtype = resolve_dtype(self.config.dtype, device)
        if dtype == torch.float32:
            dtype = None  # already float32: skip diffusers' cast (and its upcast warning)
        classes = {
            cls.__name__: cls for cls in (StableDiffusionPipeline, StableDiffusionXLPipeline)
        }
        pipeline_class = classes[base_model_spec(base_model).pipeline_class]
        from safetensors import SafetensorError

        config_dir = None if path.is_dir() else self.store.config_dir(path, base_model)
        try:
            if config_dir is None:
                pipe = pipeline_class.from_pretrained(
                    path, torch_dtype=dtype, local_files_only=True
                )
            else:
                pipe = pipeline_class.from_single_file(
                    str(path), config=str(config_dir), torch_dtype=dtype, local_files_only=True
                )
        except (OSError, SafetensorError, KeyError, RuntimeError) as error:
            # A damaged or incomplete file (when hashes are not verified): one line, not a trace.
            detail = str(error).strip().splitlines()[0] if str(error).strip() else ""
            raise ValueError(
                f"could not load {path} as a {base_model} pipeline "
                f"({type(error).__name__}: {detail[:300]}); check or download the file again"
            ) from error
        if device != "cpu":
            pipe.to(device)
        pipe.set_progress_bar_config(disable=not self.config.show_progress)
        return _Loaded(pipe, dict(pipe.scheduler.config))

    def _set_loras(self, loaded: _Loaded, loras: list[tuple[Path, float]]) -> None:
        pipe = loaded.pipe
        names: list[str] = []
        keys = [str(path.resolve()) for path, _ in loras]
        for key in keys:
            if key not in loaded.adapters:
                self._evict_adapters(loaded, keep=set(keys))
                loaded.counter += 1
                name = f"lora{loaded.counter}"
                pipe.load_lora_weights(key, adapter_name=name)
                loaded.adapters[key] = name
            loaded.adapters.move_to_end(key)
            names.append(loaded.adapters[key])
        active = (tuple(names), tuple(weight for _, weight in loras))
        if active == loaded.active:
            return  # same adapters and weights as the last call: nothing to switch
        if names:
            pipe.enable_lora()
            pipe.set_adapters(names, adapter_weights=list(active[1]))
        elif loaded.adapters:
            pipe.disable_lora()
        loaded.active = active

    def _evict_adapters(self, loaded: _Loaded, keep: set[str]) -> None:
        """Unload least recently used LoRAs beyond `max_loras` (never those about to be used)."""
        for key in list(loaded.adapters):
            if len(loaded.adapters) < self.config.max_loras:
                return
            if key not in keep:
                loaded.pipe.delete_adapters(loaded.adapters.pop(key))
                loaded.active = None

    def _set_sampler(self, loaded: _Loaded, sampler: str) -> None:
        if loaded.sampler != sampler:
            loaded.pipe.scheduler = make_scheduler(sampler, loaded.scheduler_config)
            loaded.sampler = sampler

    def _run(self, loaded: _Loaded, api: T2IApi, seeds: list[int]) -> list[Any]:
        import torch

        # CPU generators give the same noise on any device (diffusers' reproducibility advice).
        generators = [torch.Generator("cpu").manual_seed(int(seed)) for seed in seeds]
        if hasattr(loaded.pipe.scheduler, "noise_sampler_seed"):
            # SDE samplers draw Brownian noise from their own seed; A1111 ties it to the image seed.
            loaded.pipe.scheduler.noise_sampler_seed = [int(seed) for seed in seeds]
        pipe = loaded.pipe
        with torch.inference_mode():
            texts = encode_prompts(
                pipe, api.prompt, api.negative_prompt, diffusers_clip_skip(api.clip_skip)
            )
            result = pipe(
                **texts,
                width=api.width,
                height=api.height,
                num_inference_steps=api.sampling_steps,
                guidance_scale=api.cfg_scale,
                num_images_per_prompt=len(seeds),
                generator=generators,
                output_type="pil",
            )
        return list(result.images)
