"""Test doubles shared by the agent and interface tests: catalog cards and a lexical index."""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Any

from diffagent.agent.settings import Settings
from diffagent.cards import CardFile, CardStats, ModelCard, RecommendedParams
from diffagent.index.catalog import Catalog


def make_card(
    version_id: int,
    name: str,
    *,
    base: str = "SD 1.5",
    kind: str = "Checkpoint",
    tags: list[str] | None = None,
    triggers: list[str] | None = None,
    description: str = "",
    downloads: int = 1000,
    steps: int = 25,
    cfg: float = 7.0,
    sampler: str = "DPM++ 2M Karras",
    size: tuple[int, int] | None = None,
) -> ModelCard:
    width, height = size or ((1024, 1024) if base == "SDXL 1.0" else (512, 768))
    arch = "sdxl" if base == "SDXL 1.0" else "sd1"
    return ModelCard(
        version_id=version_id,
        model_id=version_id // 10,
        air=f"urn:air:{arch}:{kind.lower()}:civitai:{version_id // 10}@{version_id}",
        name=name,
        version_name="v1",
        type=kind,  # type: ignore[arg-type]
        base_model=base,  # type: ignore[arg-type]
        trigger_words=triggers or [],
        tags=tags or [],
        keywords=[],
        description=description or f"{name}: a {base} {kind.lower()} for {', '.join(tags or [])}.",
        stats=CardStats(downloads=downloads, rating=4.5, rating_count=10),
        file=CardFile(
            name=f"{name.lower().replace(' ', '_')}.safetensors",
            format="SafeTensor",
            sha256=f"{version_id:064X}",
            url=f"https://civitai.com/api/download/models/{version_id}",
        ),
        recommended=RecommendedParams(
            width=width,
            height=height,
            sampling_method=sampler,
            sampling_steps=steps,
            cfg_scale=cfg,
            lora_weight=0.7 if kind == "LORA" else None,
        ),
    )


@dataclass
class FakeHit:
    card: ModelCard
    score: float
    lexical_score: float | None = None
    dense_score: float | None = None


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", text.lower()))


@dataclass
class FakeIndex:
    """Lexical stand-in for CatalogIndex: tag/name word overlap, ties broken by downloads."""

    catalog: Catalog
    ranker_scores = False  # not a field: its scores are not a learned ranker's

    def _pool(self, base_model: str | None, model_type: str | None) -> list[ModelCard]:
        return [
            c
            for c in self.catalog
            if (base_model is None or c.base_model == base_model)
            and (model_type is None or c.type == model_type)
        ]

    def query(
        self,
        text: str,
        k: int = 10,
        *,
        base_model: str | None = None,
        model_type: str | None = None,
    ) -> list[FakeHit]:
        words = _words(text)
        scored = []
        for card in self._pool(base_model, model_type):
            doc = _words(" ".join([card.name, *card.tags, *card.trigger_words]))
            scored.append(FakeHit(card, len(words & doc) + card.stats.downloads / 1e6))
        return sorted(scored, key=lambda h: -h.score)[:k]

    def nearest_by_name(
        self, name: str, k: int = 5, *, base_model: str | None = None, model_type: str | None = None
    ) -> list[FakeHit]:
        scored = [
            FakeHit(c, difflib.SequenceMatcher(None, name.lower(), c.name.lower()).ratio())
            for c in self._pool(base_model, model_type)
        ]
        return sorted(scored, key=lambda h: -h.score)[:k]


class ScriptedPlanner:
    """A PlannerBackend that needs no LLM: ranks candidates in retrieval order (thread-safe)."""

    name = "scripted"

    def complete(
        self,
        messages: list[dict[str, str]],
        *,
        json_schema: dict | None = None,
        max_new_tokens: int = 256,
    ) -> str:
        return "not JSON: the scripted planner only ranks"

    def score_continuations(
        self, messages: list[dict[str, str]], continuations: list[str]
    ) -> list[float]:
        return [-0.1 * position for position in range(len(continuations))]


_SETTING_PATHS = {
    "catalog_dir": "index.catalog_dir",
    "top_k": "index.top_k",
    "mode": "planner.mode",
    "rank_prior": "planner.rank_prior",
    "llm_weight": "planner.llm_weight",
    "rank_candidates": "planner.rank_candidates",
    "checkpoint_db": "paths.database",
    "ephemeral": "paths.ephemeral",
    "output_dir": "paths.output_dir",
}


def settings_for(**values: Any) -> Settings:
    """Settings from flat test shorthands (mode, top_k, checkpoint_db, seeds, generation, ...)."""
    values.setdefault("mode", "rank")  # the planner tests exercise the LLM modes
    return Settings().with_overrides(
        {_SETTING_PATHS.get(name, name): value for name, value in values.items()}
    )
