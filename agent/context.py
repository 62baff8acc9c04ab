"""Runtime context of the agent graph: the catalog, index, planner and tools a run uses."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from diffagent.agent.settings import Settings
from diffagent.api import T2IApi
from diffagent.cards import ModelCard
from diffagent.index.catalog import Catalog


class SearchHitLike(Protocol):
    """What the agent reads from a search hit (diffagent.index.search.SearchHit)."""

    card: ModelCard
    score: float


class CardIndex(Protocol):
    """The part of diffagent.index.search.CatalogIndex the agent uses."""

    catalog: Catalog

    @property
    def ranker_scores(self) -> bool:
        """Whether query scores come from the learned ranker (rank mode fuses them)."""
        ...

    def query(
        self,
        text: str,
        k: int = 10,
        *,
        base_model: str | None = None,
        model_type: str | None = None,
    ) -> list[Any]:
        """Fused lexical+dense search, best first."""
        ...

    def nearest_by_name(
        self,
        name: str,
        k: int = 5,
        *,
        base_model: str | None = None,
        model_type: str | None = None,
    ) -> list[Any]:
        """Cards nearest to a (possibly misspelled) model name."""
        ...


class ImageGenerator(Protocol):
    """The part of diffagent.tools.generate.Generator the agent uses."""

    def generate(
        self,
        api: T2IApi,
        seeds: list[int],
        checkpoint_card: ModelCard,
        lora_cards: list[ModelCard],
    ) -> list[Any]:
        """Generate one PIL image per seed."""
        ...


class ImageScorer(Protocol):
    """The part of diffagent.tools.scoring.UnifiedScorer the agent uses."""

    def score(self, prompt: str, images: list[Any], **kwargs: Any) -> Any:
        """Score images for a prompt; returns a ScoreReport."""
        ...


@dataclass(kw_only=True)
class AgentContext:
    """Everything a graph run reads besides its state; passed as `context=` to the graph."""

    catalog: Catalog
    """The catalog every choice is validated against."""
    index: CardIndex
    """Search over the catalog (retrieval and nearest-name repairs)."""
    backend: Any = None
    """The planner LLM (a PlannerBackend); None in retrieval mode."""
    settings: Settings = field(default_factory=Settings)
    """The settings the agent was built from (mode, top-k, rank prior, seeds, NSFW policy)."""
    generator: ImageGenerator | None = None
    """Image generator; None means no images are made."""
    scorer: ImageScorer | None = None
    """Image scorer; used only when images are made."""

    def seeds_for(self, api_seed: int | None) -> list[int]:
        """The k seeds of a turn: counting up from the API's seed, else from the settings' seed."""
        first = api_seed if api_seed is not None else self.settings.seed
        return [first + i for i in range(self.settings.seeds)]
