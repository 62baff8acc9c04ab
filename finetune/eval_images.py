"""Table 2 of the evaluation: the paper's rows as T2I APIs, generated once and scored (Eq. 4).

Rows for one prompt, all at one fixed square size per base model:
- Baseline: the base checkpoint with default parameters (Euler a, 20 steps, CFG 7);
- Baseline*: the base checkpoint with the reference planner's sampler, steps and CFG;
- DiffAgent#: the reference planner's model (checkpoint and LoRAs) with default parameters;
- one row per planner (stock, SFT, RRHF): its repaired API as it is.
The reference planner is the last one evaluated (RRHF when given, as in the paper).
Images are generated once per (prompt, API, seed): a row whose scores are all in the score cache
is not generated again, and rows with the same API share their images.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from statistics import fmean
from typing import Any

from pydantic import BaseModel, Field

from diffagent.api import LoraRef, T2IApi
from diffagent.cards import CardFile, ModelCard, RecommendedParams
from diffagent.finetune.eval_plans import PlanRecord
from diffagent.index.catalog import Catalog
from diffagent.tools.scoring import UnifiedScorer, unified_metric

DEFAULT_PARAMS: dict[str, Any] = {
    "sampling_method": "Euler a",
    "sampling_steps": 20,
    "cfg_scale": 7.0,
}
BASELINE = "Baseline"
BASELINE_STAR = "Baseline*"
DIFFAGENT_SHARP = "DiffAgent#"
# Fixed evaluation sizes (the paper standardises the shape): each base model's native square.
NATIVE_SIZES: dict[str, int] = {"SD 1.5": 512, "SDXL 1.0": 1024}


def planner_row(planner: str) -> str:
    """The Table 2 row name of a planner's own APIs, e.g. DiffAgent-rrhf."""
    return f"DiffAgent-{planner}"


def base_card(path: Path, base_model: str, version_id: int) -> ModelCard:
    """A card for a base checkpoint file (not a catalog card), found in the store by its name."""
    from diffagent.tools.store import sha256_file

    arch = "sdxl" if base_model == "SDXL 1.0" else "sd1"
    return ModelCard(
        version_id=version_id,
        model_id=version_id,
        air=f"urn:air:{arch}:checkpoint:local:{path.stem}",
        name=f"base {base_model} ({path.name})",
        type="Checkpoint",
        base_model=base_model,  # type: ignore[arg-type]
        description=f"The {base_model} base checkpoint.",
        file=CardFile(
            name=path.name,
            format="SafeTensor",
            size_kb=path.stat().st_size / 1024,
            sha256=sha256_file(path).upper(),
            url=f"file://{path}",
        ),
        recommended=RecommendedParams(
            width=512, height=512, sampling_method="Euler a", sampling_steps=20, cfg_scale=7.0
        ),
    )


@dataclass
class WeightMap:
    """Which weights an API runs on: its cards' own files, or stand-ins of the same kind.

    `base_cards` holds the base checkpoint per base model. With `stand_ins` (tiny weights), every
    card runs on the stand-in of its base model and type, keeping one LoRA at its weight.
    """

    catalog: Catalog
    base_cards: dict[str, ModelCard]
    stand_ins: dict[tuple[str, str], ModelCard] | None = None
    _cards: dict[int, ModelCard] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self._cards = {card.version_id: card for card in self.base_cards.values()}

    def card(self, version_id: int | None) -> ModelCard:
        """A catalog or base card by version id; an unknown id is an error."""
        found = self._cards.get(version_id or 0) or self.catalog.get(version_id or -1)
        if found is None:
            raise ValueError(f"no card for version id {version_id}")
        return found

    def resolve(self, api: T2IApi) -> tuple[T2IApi, ModelCard, list[ModelCard]]:
        """The API to run, its checkpoint card and LoRA cards (stand-ins substituted)."""
        if api.type == "LORA":
            if api.checkpoint is None:
                raise ValueError(f"LoRA API {api.model!r} names no checkpoint")
            checkpoint = self.card(api.checkpoint.version_id)
        else:
            checkpoint = self.card(api.version_id)
        loras = [self.card(ref.version_id) for ref in api.loras]
        if self.stand_ins is None:
            return api, checkpoint, loras
        checkpoint = self.stand_ins[(checkpoint.base_model, "Checkpoint")]
        refs: list[LoraRef] = []
        lora_cards: list[ModelCard] = []
        if api.loras:
            stand_in = self.stand_ins[(api.base_model, "LORA")]
            refs.append(
                LoraRef(
                    version_id=stand_in.version_id,
                    name=stand_in.name,
                    weight=api.loras[0].weight,
                    base_model=stand_in.base_model,
                )
            )
            lora_cards.append(stand_in)
        return api.model_copy(update={"loras": refs}), checkpoint, lora_cards


class RowScores(BaseModel):
    """Scores of one row's images for one prompt: per-scorer means (raw, normalised), Eq. 4."""

    raw: dict[str, float]
    normalised: dict[str, float]
    unified: float
    generated: bool = Field(description="Images were generated (False: all scores cached).")


class Table2Row(BaseModel):
    """One row of Table 2 on one prompt set: means over prompts (normalised in [0, 1])."""

    prompt_set: str
    row: str
    n: int
    raw: dict[str, float] = Field(description="Mean raw score per scorer (paper scale / 100).")
    normalised: dict[str, float]
    unified: float


def fixed_size(api: T2IApi, sizes: dict[str, int]) -> T2IApi:
    """The API at the evaluation's square size for its base model."""
    side = sizes[api.base_model]
    return api.model_copy(update={"width": side, "height": side})


def row_apis(
    plans: dict[str, PlanRecord],
    reference: str,
    base_cards: dict[str, ModelCard],
    sizes: dict[str, int],
    defaults: dict[str, Any] | None = None,
) -> dict[str, T2IApi]:
    """The rows' APIs for one prompt from each planner's repaired plan (insertion = row order)."""
    params = defaults or DEFAULT_PARAMS
    ref = T2IApi.model_validate(plans[reference].api)
    item = plans[reference]
    base = base_cards[ref.base_model]
    baseline = T2IApi(
        model=base.name,
        type="Checkpoint",
        base_model=base.base_model,
        width=sizes[base.base_model],
        height=sizes[base.base_model],
        version_id=base.version_id,
        prompt=item.prompt,
        negative_prompt=item.negative_prompt,
        **params,
    )
    tuned = {key: getattr(ref, key) for key in ("sampling_method", "sampling_steps", "cfg_scale")}
    rows = {
        BASELINE: baseline,
        BASELINE_STAR: baseline.model_copy(update=tuned),
        DIFFAGENT_SHARP: ref.model_copy(update=params),
    }
    for planner, record in plans.items():
        rows[planner_row(planner)] = T2IApi.model_validate(record.api)
    return {name: fixed_size(api, sizes) for name, api in rows.items()}


class ImageJudge:
    """Generates an API's k images and scores them, through the score cache."""

    def __init__(self, generator: Any, scorer: UnifiedScorer, weights: WeightMap, seeds: list[int]):
        self.generator = generator
        self.scorer = scorer
        self.weights = weights
        self.seeds = seeds
        self.images_generated = 0
        self.scores_computed = 0

    def judge_many(self, jobs: list[tuple[str, T2IApi]]) -> list[RowScores]:
        """Scores of each (prompt, API) job; same jobs share images, grouped by checkpoint."""
        resolved = []
        for prompt, api in jobs:
            run_api, checkpoint, loras = self.weights.resolve(api)
            files = "|".join(card.file.sha256 for card in [checkpoint, *loras])
            key = f"{run_api.model_dump_json()}|{files}"
            resolved.append((prompt, key, run_api, checkpoint, loras))
        done: dict[tuple[str, str], RowScores] = {}
        # One checkpoint after the other: each loads once (the generator keeps one loaded).
        for prompt, key, run_api, checkpoint, loras in sorted(
            resolved, key=lambda job: job[3].file.sha256
        ):
            if (prompt, key) not in done:
                done[(prompt, key)] = self._judge(prompt, key, run_api, checkpoint, loras)
        return [done[(prompt, key)] for prompt, key, *_ in resolved]

    def _judge(
        self,
        prompt: str,
        key: str,
        run_api: T2IApi,
        checkpoint: ModelCard,
        loras: list[ModelCard],
    ) -> RowScores:
        raw = self._cached(prompt, key)
        generated = raw is None
        if raw is None:
            images = self.generator.generate(run_api, self.seeds, checkpoint, loras)
            self.images_generated += len(images)
            report = self.scorer.score(prompt, images, api_key=key, seeds=self.seeds)
            self.scores_computed += report.computed
            raw = {
                name: [getattr(image, name).raw for image in report.per_image]
                for name in report.scorers
            }
        ranges = self.scorer.config.ranges
        normalised = {
            name: [ranges[name].normalise(v) for v in values]  # type: ignore[index]
            for name, values in raw.items()
        }
        per_image = [
            {name: values[i] for name, values in normalised.items()} for i in range(len(self.seeds))
        ]
        return RowScores(
            raw={name: fmean(values) for name, values in raw.items()},
            normalised={name: fmean(values) for name, values in normalised.items()},
            unified=unified_metric(per_image),
            generated=generated,
        )

    def _cached(self, prompt: str, key: str) -> dict[str, list[float]] | None:
        """Raw scores of every scorer and seed from the cache, or None when any is missing."""
        cache = self.scorer.cache
        if cache is None:
            return None
        raw: dict[str, list[float]] = {}
        for name in self.scorer.scorers:
            values = cache.get_many(prompt, key, self.seeds, self.scorer.cache_keys[name])
            if len(values) != len(self.seeds):
                return None
            raw[name] = [values[seed] for seed in self.seeds]
        return raw


def table2_rows(prompt_set: str, scores: dict[str, list[RowScores]]) -> list[Table2Row]:
    """Means over prompts per row (rows in their given order)."""
    rows: list[Table2Row] = []
    for row, items in scores.items():
        if not items:
            continue
        names = list(items[0].raw)
        rows.append(
            Table2Row(
                prompt_set=prompt_set,
                row=row,
                n=len(items),
                raw={name: fmean(item.raw[name] for item in items) for name in names},
                normalised={name: fmean(item.normalised[name] for item in items) for name in names},
                unified=fmean(item.unified for item in items),
            )
        )
    return rows
