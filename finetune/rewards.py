"""RRHF rewards: `catalog` (agreement with the held-out pair) and `unified` (Eq. 4 on images).

A reward scores the candidate cards of one pair. `unified` generates k seeded images per
response with tools.generate and scores them with the unified metric through the score cache,
keyed by (prompt, API, seed, scorer): a response scored before is not generated or scored again.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from diffagent.agent.card_api import card_api
from diffagent.agent.understand import Constraints
from diffagent.api import T2IApi
from diffagent.cards import ModelCard
from diffagent.finetune.data import Pair
from diffagent.index.catalog import Catalog
from diffagent.tools.scoring import UnifiedScorer, unified_metric

SAME_VERSION = 1.0
SAME_MODEL = 0.7
SHARED_STYLE = 0.3
REWARDS = ("catalog", "unified")


class Reward(Protocol):
    """Scores of candidate cards for one pair, higher is better."""

    name: str

    def score(self, pair: Pair, cards: list[ModelCard]) -> list[float]:
        """One score per card."""
        ...


class CatalogReward:
    """Same version 1, same model 0.7, a style tag shared with the true card 0.3, else 0."""

    name = "catalog"

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    def score(self, pair: Pair, cards: list[ModelCard]) -> list[float]:
        """Agreement of each card with the pair's true card."""
        truth = self.catalog.get(pair.version_id)
        if truth is None:
            raise ValueError(f"pair's version {pair.version_id} is not in the catalog")
        styles = {tag.lower() for tag in truth.tags}
        scores = []
        for card in cards:
            if card.version_id == truth.version_id:
                scores.append(SAME_VERSION)
            elif card.model_id == truth.model_id:
                scores.append(SAME_MODEL)
            elif styles & {tag.lower() for tag in card.tags}:
                scores.append(SHARED_STYLE)
            else:
                scores.append(0.0)
        return scores


def pair_api(card: ModelCard, pair: Pair, seed: int = 0) -> T2IApi:
    """The full API a response stands for: the card's parameters for the pair's prompt."""
    cons = Constraints(prompt=pair.prompt, negative_prompt=pair.negative_prompt, seed=seed)
    return card_api(card, cons)


def api_key(api: T2IApi) -> str:
    """Cache key of an API: its JSON with sorted keys (the agent's own convention)."""
    return json.dumps(api.model_dump(mode="json"), sort_keys=True)


class UnifiedReward:
    """Eq. 4 over k seeds per response: generate with tools.generate, score through the cache."""

    name = "unified"

    def __init__(
        self, catalog: Catalog, generator: Any, scorer: UnifiedScorer, seeds: int = 2
    ) -> None:
        if scorer.cache is None:
            raise ValueError("the unified reward needs a score cache (ScoringConfig.cache_path)")
        self.catalog = catalog
        self.generator = generator
        self.scorer = scorer
        self.seeds = list(range(seeds))
        self.generated = 0  # images generated so far (cached responses generate none)

    def score(self, pair: Pair, cards: list[ModelCard]) -> list[float]:
        """Unified metric of each card's API for the pair's prompt."""
        return [self._one(pair, card) for card in cards]

    def _cached(self, prompt: str, key: str) -> float | None:
        """Eq. 4 from cached raw scores alone, or None when any is missing."""
        assert self.scorer.cache is not None
        ranges = self.scorer.config.ranges
        rows: list[dict[str, float]] = [{} for _ in self.seeds]
        for name, cache_key in self.scorer.cache_keys.items():
            values = self.scorer.cache.get_many(prompt, key, self.seeds, cache_key)
            if len(values) < len(self.seeds):
                return None
            for row, seed in zip(rows, self.seeds, strict=True):
                row[name] = ranges[name].normalise(values[seed])  # type: ignore[index]
        return unified_metric(rows)

    def _one(self, pair: Pair, card: ModelCard) -> float:
        api = pair_api(card, pair)
        key = api_key(api)
        cached = self._cached(api.prompt, key)
        if cached is not None:
            return cached
        checkpoint = self.catalog.get(api.checkpoint.version_id) if api.checkpoint else card
        if checkpoint is None:
            return 0.0  # a LoRA without a base checkpoint in the catalog cannot be run
        loras = [c for ref in api.loras if (c := self.catalog.get(ref.version_id)) is not None]
        images = self.generator.generate(api, self.seeds, checkpoint, loras)
        self.generated += len(images)
        report = self.scorer.score(api.prompt, images, api_key=key, seeds=self.seeds)
        return report.unified


def make_reward(
    name: str, catalog: Catalog, *, generator: Any = None, scorer: Any = None, seeds: int = 2
) -> Reward:
    """The named reward; `unified` needs a generator and a scorer with a cache."""
    if name == "catalog":
        return CatalogReward(catalog)
    if name == "unified":
        if generator is None or scorer is None:
            raise ValueError(
                "reward 'unified' needs weights: set DIFFAGENT_GENERATION__MODEL_STORE and the "
                "DIFFAGENT_SCORING__* paths (and a scoring cache path)"
            )
        return UnifiedReward(catalog, generator, scorer, seeds)
    raise ValueError(f"unknown reward {name!r}; allowed: {', '.join(REWARDS)}")
