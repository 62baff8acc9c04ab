"""The paper's unified human-preference metric S(t, r) (Eq. 4): CLIP Score, ImageReward, HPS v2.

Each raw score is mapped linearly from a documented range to [0, 1] and clipped (see
docs/tools-scoring.md for the ranges and why); S(t, x_i) is the mean of the normalised scores of
one image and S(t, r) the mean of S(t, x_i) over the k images (one per seed) of an API response.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, Protocol

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from tqdm import tqdm

from diffagent.tools.score_cache import ScoreCache

ScorerName = Literal["clip", "imagereward", "hps"]
ALL_SCORERS: tuple[ScorerName, ...] = ("clip", "imagereward", "hps")


class NormRange(BaseModel):
    """Raw values `low`..`high` map linearly onto 0..1; values outside are clipped."""

    model_config = ConfigDict(frozen=True)
    low: float
    high: float

    @model_validator(mode="after")
    def _ordered(self) -> NormRange:
        if not self.high > self.low:
            raise ValueError(f"normalisation range needs high > low, got [{self.low}, {self.high}]")
        return self

    def normalise(self, raw: float) -> float:
        """Map a raw score into [0, 1]."""
        return min(1.0, max(0.0, (raw - self.low) / (self.high - self.low)))


def default_ranges() -> dict[ScorerName, NormRange]:
    """Documented raw ranges (docs/tools-scoring.md): CLIP Score, ImageReward, HPS v2 cosine."""
    return {
        "clip": NormRange(low=0.0, high=1.0),
        "imagereward": NormRange(low=-2.5, high=2.5),
        "hps": NormRange(low=0.15, high=0.35),
    }


class ScoringConfig(BaseModel):
    """Which scorers run, where their local weights are, the cache, device and normalisation."""

    model_config = ConfigDict(extra="forbid")
    scorers: list[ScorerName] = Field(default_factory=lambda: list(ALL_SCORERS))
    clip_path: Path | None = None
    clip_arch: str = "ViT-B-32-quickgelu"  # open_clip name, or a path to an open_clip config JSON
    imagereward_path: Path | None = None
    imagereward_med_config: Path | None = None
    imagereward_vocab: Path | None = None  # None: bert-base-uncased vocab shipped with MiniLM
    hps_path: Path | None = None
    hps_version: Literal["v2.0", "v2.1"] = "v2.0"
    hps_arch: str = "ViT-H-14"  # open_clip name, or a path to an open_clip config JSON
    cache_path: Path | None = None
    device: Literal["cpu", "cuda", "auto"] = "auto"
    batch_size: int = Field(default=8, ge=1)
    ranges: dict[ScorerName, NormRange] = Field(default_factory=default_ranges)

    @field_validator("scorers")
    @classmethod
    def _scorers_valid(cls, value: list[ScorerName]) -> list[ScorerName]:
        if not value or len(set(value)) != len(value):
            raise ValueError(f"scorers must be a non-empty list without repeats of {ALL_SCORERS}")
        return value

    @model_validator(mode="after")
    def _ranges_complete(self) -> ScoringConfig:
        missing = [name for name in self.scorers if name not in self.ranges]
        if missing:
            raise ValueError(f"no normalisation range for {missing}")
        return self

    @classmethod
    def from_tiny(cls, paths: dict[str, Path], **overrides: object) -> ScoringConfig:
        """Config for the tiny weights of `make_tiny_scorer_weights` (tests, demos)."""
        values: dict[str, object] = {
            "clip_path": paths["clip"],
            "clip_arch": str(paths["clip_arch"]),
            "imagereward_path": paths["imagereward"],
            "imagereward_med_config": paths["imagereward_med_config"],
            "hps_path": paths["hps"],
            "hps_arch": str(paths["hps_arch"]),
            "device": "cpu",
        }
        values.update(overrides)
        return cls.model_validate(values)


class ScoreValue(BaseModel):
    """One scorer's raw output and its normalised value in [0, 1]."""

    raw: float
    normalised: float


class ImageScores(BaseModel):
    """Scores of one image; `unified` is S(t, x_i), the mean of the normalised scores."""

    seed: int | None = None
    clip: ScoreValue | None = None
    imagereward: ScoreValue | None = None
    hps: ScoreValue | None = None
    unified: float


class ScoreReport(BaseModel):
    """Per-image scores and the unified metric S(t, r) of Eq. 4 (mean over the k images)."""

    prompt: str
    api_key: str = ""
    per_image: list[ImageScores]
    unified: float
    scorers: list[ScorerName]
    conventions: dict[str, str]
    ranges: dict[str, NormRange]
    computed: int = Field(description="raw scores computed now (the rest came from the cache)")


def unified_metric(per_image: Sequence[dict[str, float]]) -> float:
    """Eq. 4: S(t, r) = 1/k sum_i S(t, x_i), S(t, x_i) = mean of the image's normalised scores."""
    if not per_image:
        raise ValueError("the unified metric needs at least one image")
    return sum(sum(scores.values()) / len(scores) for scores in per_image) / len(per_image)


class Scorer(Protocol):
    """What UnifiedScorer needs from a scorer."""

    name: str
    convention: str

    def score(self, prompt: str, images: Sequence[Image.Image]) -> list[float]:
        """Raw scores of the images for the prompt."""
        ...


def _weights_id(path: Path | None) -> str:
    return f"{path.name}:{path.stat().st_size}" if path is not None and path.is_file() else "-"


class UnifiedScorer:
    """Score images with the configured scorers; models load on first use; results are cached."""

    def __init__(self, config: ScoringConfig | None = None) -> None:
        self.config = config or ScoringConfig()
        cfg = self.config
        device = cfg.device
        if device == "auto":
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = device
        # Constructing a scorer checks its files (a clear error now) but loads nothing yet.
        self.scorers: dict[str, Scorer] = {}
        self.cache_keys: dict[str, str] = {}
        for name in cfg.scorers:
            if name == "clip":
                from diffagent.tools.score_clip import ClipScorer

                self.scorers[name] = ClipScorer(cfg.clip_path, arch=cfg.clip_arch, device=device)
                self.cache_keys[name] = (
                    f"clip:{Path(cfg.clip_arch).stem}:{_weights_id(cfg.clip_path)}"
                )
            elif name == "imagereward":
                from diffagent.tools.score_imagereward import ImageRewardScorer

                self.scorers[name] = ImageRewardScorer(
                    cfg.imagereward_path,
                    cfg.imagereward_med_config,
                    vocab=cfg.imagereward_vocab,
                    device=device,
                )
                self.cache_keys[name] = f"imagereward:{_weights_id(cfg.imagereward_path)}"
            else:
                from diffagent.tools.score_hps import HpsScorer

                self.scorers[name] = HpsScorer(
                    cfg.hps_path, version=cfg.hps_version, arch=cfg.hps_arch, device=device
                )
                self.cache_keys[name] = (
                    f"hps:{cfg.hps_version}:{Path(cfg.hps_arch).stem}:{_weights_id(cfg.hps_path)}"
                )
        self.cache = ScoreCache(cfg.cache_path) if cfg.cache_path is not None else None
        self._lock = threading.Lock()

    def _raw_scores(
        self,
        name: str,
        prompt: str,
        images: Sequence[Image.Image],
        seeds: list[int] | None,
        api_key: str,
    ) -> tuple[list[float], int]:
        """Raw scores of one scorer for all images, from the cache where possible."""
        known: dict[int, float] = {}
        if self.cache is not None and seeds is not None:
            cached = self.cache.get_many(prompt, api_key, seeds, self.cache_keys[name])
            known = {i: cached[seed] for i, seed in enumerate(seeds) if seed in cached}
        todo = [i for i in range(len(images)) if i not in known]
        size = self.config.batch_size
        batches = [todo[start : start + size] for start in range(0, len(todo), size)]
        for batch in tqdm(batches, desc=f"scoring {name}", disable=len(batches) < 4):
            values = self.scorers[name].score(prompt, [images[i] for i in batch])
            known.update(zip(batch, values, strict=True))
        if self.cache is not None and seeds is not None and todo:
            self.cache.put_many(
                prompt, api_key, {seeds[i]: known[i] for i in todo}, self.cache_keys[name]
            )
        return [known[i] for i in range(len(images))], len(todo)

    def score(
        self,
        prompt: str,
        images: Sequence[Image.Image],
        *,
        api_key: str = "",
        seeds: Sequence[int] | None = None,
    ) -> ScoreReport:
        """Score the k images (one per seed) of one API response, cached by (prompt, api, seed)."""
        if not images:
            raise ValueError("score needs at least one image")
        seed_list = list(seeds) if seeds is not None else None
        if seed_list is not None:
            if len(seed_list) != len(images):
                raise ValueError(
                    f"got {len(seed_list)} seeds for {len(images)} images; give one per image"
                )
            if len(set(seed_list)) != len(seed_list):
                raise ValueError("seeds must be unique (they key the score cache)")
        ranges = self.config.ranges
        with self._lock:
            raw: dict[str, list[float]] = {}
            computed = 0
            for name in self.scorers:
                raw[name], count = self._raw_scores(name, prompt, images, seed_list, api_key)
                computed += count
        per_image: list[ImageScores] = []
        normalised_rows: list[dict[str, float]] = []
        for i in range(len(images)):
            normalised = {name: ranges[name].normalise(values[i]) for name, values in raw.items()}  # type: ignore[index]
            normalised_rows.append(normalised)
            fields = {
                name: ScoreValue(raw=raw[name][i], normalised=normalised[name]) for name in raw
            }
            per_image.append(
                ImageScores(
                    seed=seed_list[i] if seed_list is not None else None,
                    unified=unified_metric([normalised]),
                    **fields,
                )
            )
        return ScoreReport(
            prompt=prompt,
            api_key=api_key,
            per_image=per_image,
            unified=unified_metric(normalised_rows),
            scorers=list(self.config.scorers),
            conventions={name: scorer.convention for name, scorer in self.scorers.items()},
            ranges={name: ranges[name] for name in self.scorers},  # type: ignore[index]
            computed=computed,
        )

    def score_many(
        self, requests: Sequence[tuple[str, Sequence[Image.Image], str, Sequence[int] | None]]
    ) -> list[ScoreReport]:
        """Score several (prompt, images, api_key, seeds) responses, e.g. RRHF's n candidates."""
        return [
            self.score(prompt, images, api_key=api_key, seeds=seeds)
            for prompt, images, api_key, seeds in tqdm(
                requests, desc="scoring responses", disable=len(requests) < 4
            )
        ]
