"""The paper's evaluation (Tables 1 and 2) for the stock, SFT and RRHF planners.

Run it with `diffagent finetune eval` (docs/finetune-eval.md):

    diffagent finetune eval --catalog CATALOG --prompts dabench-test coco parti \
        --adapter sft=runs/sft/adapter --adapter rrhf=runs/rrhf/adapter \
        --out runs/eval --limit 100 --seeds 3 --tiny-weights /tmp/tiny

Plans are saved per prompt set and planner (`plans/`) and reused by a rerun with the same
planner settings; scores go through the score cache (`scores.sqlite`), so a rerun generates and
scores nothing it already has.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from diffagent.agent import prompts as planner_prompts
from diffagent.agent.planner import PlannerBackend, PlannerConfig, make_backend
from diffagent.api import T2IApi
from diffagent.cards import ModelCard, read_cards
from diffagent.finetune.eval_images import (
    DEFAULT_PARAMS,
    NATIVE_SIZES,
    ImageJudge,
    RowScores,
    Table2Row,
    WeightMap,
    base_card,
    row_apis,
    table2_rows,
)
from diffagent.finetune.eval_plans import (
    CandidateFn,
    PlanRecord,
    Table1Row,
    fingerprint_of,
    run_plans,
    table1_row,
    tfidf_candidates,
)
from diffagent.finetune.prompt_sets import PromptSetName, load_prompt_set
from diffagent.index.catalog import Catalog
from diffagent.tools.scoring import ScoringConfig

TINY_SIZE = 64
# Version ids of base checkpoints given as files (no Civitai version has a negative id).
_BASE_IDS = {"SD 1.5": -15, "SDXL 1.0": -10}


class PlannerSpec(BaseModel):
    """One planner to evaluate: the embedded model (with an adapter) or an OpenAI endpoint."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,40}$", description="Row name, e.g. sft.")
    adapter: Path | None = Field(default=None, description="PEFT LoRA folder (embedded).")
    base_url: str | None = Field(default=None, description="OpenAI-compatible endpoint.")
    model: str | None = Field(default=None, description="Served model (e.g. the LoRA module).")

    def planner_config(self, max_new_tokens: int) -> PlannerConfig:
        """The agent's planner configuration for this planner, in generate mode."""
        return PlannerConfig(
            mode="generate",
            backend="openai" if self.base_url else "embedded",
            adapter_path=self.adapter,
            base_url=self.base_url,
            model=self.model,
            max_new_tokens=max_new_tokens,
        )


class EvalConfig(BaseModel):
    """What to evaluate, on which prompts, with which weights, and where the report goes."""

    model_config = ConfigDict(extra="forbid")

    catalog_dir: Path
    prompt_sets: list[PromptSetName]
    out_dir: Path
    planners: list[PlannerSpec] = Field(default_factory=lambda: [PlannerSpec(name="stock")])
    limit: int | None = Field(default=None, ge=1, description="Prompts per set.")
    seeds: int = Field(default=3, ge=1, le=16, description="k images per API (paper: 3).")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    top_k: int = Field(default=8, ge=1, le=50, description="Candidate cards per prompt.")
    max_new_tokens: int = Field(default=192, ge=16, le=1024, description="As the agent's.")
    images: bool = Field(default=True, description="Run Table 2 (generation and scoring).")
    tiny_weights: Path | None = Field(
        default=None, description="Tiny weights folder: every card runs on its tiny stand-in."
    )
    model_store: Path | None = Field(default=None, description="Real weights: Civitai files.")
    base_checkpoints: dict[str, Path] = Field(
        default_factory=dict, description="Real weights: base checkpoint file per base model."
    )
    scoring: ScoringConfig | None = Field(default=None, description="Real scorer weights.")
    size: int | None = Field(default=None, description="Square side; None: native (tiny: 64).")
    default_params: dict[str, Any] = Field(default_factory=lambda: dict(DEFAULT_PARAMS))
    index_dir: Path | None = Field(default=None, description="Candidates from this index.")
    shared_dir: Path | None = None
    sample_seed: int = Field(default=0, description="Seed of the prompt sets' random order.")

    @field_validator("planners")
    @classmethod
    def _unique_names(cls, value: list[PlannerSpec]) -> list[PlannerSpec]:
        names = [spec.name for spec in value]
        if not value or len(set(names)) != len(names):
            raise ValueError(f"planner names must be unique and at least one, got {names}")
        return value

    @field_validator("base_checkpoints")
    @classmethod
    def _known_bases(cls, value: dict[str, Path]) -> dict[str, Path]:
        unknown = sorted(set(value) - set(_BASE_IDS))
        if unknown:
            raise ValueError(f"unknown base model(s) {unknown}; allowed: {', '.join(_BASE_IDS)}")
        return value

    @field_validator("prompt_sets")
    @classmethod
    def _some_sets(cls, value: list[str]) -> list[str]:
        if not value or len(set(value)) != len(value):
            raise ValueError(f"give each prompt set once, at least one, got {value}")
        return value


class EvalReport(BaseModel):
    """Everything the report files show."""

    config: dict[str, Any]
    table1: list[Table1Row]
    table2: list[Table2Row]
    reference_planner: str
    candidates: str
    weights: str
    images_generated: int = 0
    scores_computed: int = 0
    row_judgements: int = 0
    row_judgements_cached: int = 0
    seconds: float = 0.0


def image_setup(config: EvalConfig, catalog: Catalog) -> tuple[WeightMap, Any, ScoringConfig]:
    """Weight map, generator and scoring config: the tiny stand-ins or the real files."""
    from diffagent.tools.generate import GenerationConfig, Generator

    cache = config.out_dir / "scores.sqlite"
    if config.tiny_weights is not None:
        from diffagent.tools.testing.score_tiny import make_tiny_scorer_weights
        from diffagent.tools.testing.tiny import make_tiny_weights

        folder = config.tiny_weights
        if not (folder / "cards.jsonl").is_file():
            make_tiny_weights(folder)
        scoring = ScoringConfig.from_tiny(
            make_tiny_scorer_weights(folder / "scorers"), cache_path=cache, device=config.device
        )
        tiny: list[ModelCard] = read_cards(folder / "cards.jsonl")
        stand_ins = {(card.base_model, card.type): card for card in tiny}
        bases: dict[str, ModelCard] = {
            card.base_model: card for card in tiny if card.type == "Checkpoint"
        }
        weights = WeightMap(catalog, bases, stand_ins)
        store = folder
    else:
        if config.model_store is None or config.scoring is None:
            raise ValueError(
                "Table 2 needs weights: --tiny-weights DIR, or --model-store DIR with the base "
                "checkpoints and scorer weights (or --no-images for Table 1 only)"
            )
        bases = {
            base: base_card(path, base, _BASE_IDS[base])  # type: ignore[index]
            for base, path in config.base_checkpoints.items()
        }
        weights = WeightMap(catalog, bases)
        scoring = config.scoring.model_copy(update={"cache_path": cache})
        store = config.model_store
    generator = Generator(GenerationConfig(model_store=store, device=config.device))
    return weights, generator, scoring


def run_eval(
    config: EvalConfig,
    *,
    backends: dict[str, PlannerBackend] | None = None,
    candidates: CandidateFn | None = None,
    progress: Callable[[str], None] | None = None,
) -> EvalReport:
    """Plan every prompt with every planner (Table 1), then generate and score the rows (Table 2).

    `backends` replaces the planners' backends by name (tests); `candidates` the candidate source.
    """
    from diffagent.tools.scoring import UnifiedScorer

    started = time.perf_counter()
    catalog = Catalog.load(config.catalog_dir)
    source = "tf-idf over card names, trigger words, tags and keywords"
    if candidates is None and config.index_dir is not None:
        from diffagent.index.search import CatalogIndex

        index = CatalogIndex.from_catalog(catalog, config.index_dir, build=False)
        candidates = lambda text, k: [hit.card for hit in index.query(text, k)]  # noqa: E731
        source = f"index {config.index_dir}"
    elif candidates is None:
        candidates = tfidf_candidates(catalog)
    else:
        source = "given"
    reference = config.planners[-1].name
    judge: ImageJudge | None = None
    weights_note = "none (Table 1 only)"
    sizes = dict(NATIVE_SIZES)
    if config.images:
        weights, generator, scoring = image_setup(config, catalog)
        judge = ImageJudge(generator, UnifiedScorer(scoring), weights, list(range(config.seeds)))
        side = config.size or (TINY_SIZE if config.tiny_weights is not None else None)
        sizes = {base: side or NATIVE_SIZES[base] for base in NATIVE_SIZES}
        weights_note = (
            f"tiny stand-ins from {config.tiny_weights}"
            if config.tiny_weights is not None
            else f"real files in {config.model_store}"
        )
    table1: list[Table1Row] = []
    table2: list[Table2Row] = []
    judged = cached = 0
    for prompt_set in config.prompt_sets:
        prompts = load_prompt_set(
            prompt_set,
            catalog_dir=config.catalog_dir,
            shared_dir=config.shared_dir,
            limit=config.limit,
            seed=config.sample_seed,
        )
        plans: dict[str, list[PlanRecord]] = {}
        for spec in config.planners:
            settings = spec.planner_config(config.max_new_tokens)

            def factory(spec: PlannerSpec = spec, settings: PlannerConfig = settings) -> Any:
                return backends[spec.name] if backends else make_backend(settings)

            fingerprint = fingerprint_of(
                spec.name,
                {
                    **settings.model_dump(),
                    "top_k": config.top_k,
                    "candidates": source,
                    "system": planner_prompts.GENERATE_SYSTEM,
                    "schema": planner_prompts.generate_json_schema(),
                },
            )
            plans[spec.name] = run_plans(
                factory,
                spec.name,
                fingerprint,
                prompt_set,
                prompts,
                catalog,
                candidates,
                config.out_dir / "plans" / f"{prompt_set}--{spec.name}.jsonl",
                top_k=config.top_k,
                max_new_tokens=config.max_new_tokens,
                progress=progress,
            )
            table1.append(table1_row(prompt_set, spec.name, plans[spec.name], catalog))
        if judge is None:
            continue
        jobs: list[tuple[str, str, T2IApi]] = []
        for number, item in enumerate(prompts):
            by_planner = {name: records[number] for name, records in plans.items()}
            apis = row_apis(
                by_planner, reference, judge.weights.base_cards, sizes, config.default_params
            )
            jobs += [(row, item.prompt, api) for row, api in apis.items()]
        if progress is not None:
            progress(f"{prompt_set}: {len(jobs)} row judgements ({config.seeds} seeds each)")
        scores: dict[str, list[RowScores]] = {}
        results = judge.judge_many([(prompt, api) for _, prompt, api in jobs])
        for (row, _, _), result in zip(jobs, results, strict=True):
            scores.setdefault(row, []).append(result)
            judged += 1
            cached += not result.generated
        table2.extend(table2_rows(prompt_set, scores))
    return EvalReport(
        config=config.model_dump(mode="json", exclude={"scoring"}),
        table1=table1,
        table2=table2,
        reference_planner=reference,
        candidates=source,
        weights=weights_note,
        images_generated=judge.images_generated if judge else 0,
        scores_computed=judge.scores_computed if judge else 0,
        row_judgements=judged,
        row_judgements_cached=cached,
        seconds=time.perf_counter() - started,
    )
