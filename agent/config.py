"""Typed configuration of the agent: catalog, planning mode, planner, persistence and tools."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from diffagent.agent.planner import PlannerConfig
from diffagent.paths import user_data_dir
from diffagent.tools.generate import GenerationConfig
from diffagent.tools.scoring import ScoringConfig


class AgentConfig(BaseModel):
    """How a DiffAgent is built; every field has a working default (starter catalog, rank mode)."""

    model_config = ConfigDict(extra="forbid")

    catalog_dir: Path | None = Field(
        default=None, description="Catalog directory (cards.jsonl); None = the starter catalog."
    )
    index_dir: Path | None = Field(
        default=None, description="Index directory; None = beside the catalog or in user data."
    )
    mode: Literal["rank", "generate", "retrieval"] = Field(
        default="rank",
        description="rank: the LLM scores candidate APIs; generate: the LLM writes the API JSON; "
        "retrieval: the index's top card with its recommended parameters.",
    )
    planner: PlannerConfig = Field(default_factory=PlannerConfig)
    top_k: int = Field(default=8, ge=1, le=50, description="Retrieved cards the planner sees.")
    rank_prior: float = Field(
        default=2.0,
        ge=0.0,
        description="Rank mode: option score = LLM log-likelihood - rank_prior * log(1 + "
        "retrieval rank). 2.0 was best for the untuned SmolLM2 on 100 held-out val prompts; "
        "0 ranks by the LLM alone (for a fine-tuned planner).",
    )
    checkpoint_db: Path | None = Field(
        default=None,
        description="SQLite file of conversations; None = user_data_dir()/conversations.sqlite.",
    )
    ephemeral: bool = Field(
        default=False, description="Keep conversations in memory only (one-shot commands)."
    )
    allow_nsfw: bool = Field(default=False, description="Serve NSFW requests instead of declining.")
    generation: GenerationConfig | None = Field(
        default=None, description="Where weights are and how to generate; None = no images."
    )
    scoring: ScoringConfig | None = Field(
        default=None, description="Scorer weights; None = images are not scored."
    )
    seeds: int = Field(default=1, ge=1, le=16, description="Images per turn (k seeds).")
    seed: int = Field(default=0, ge=0, description="First seed; the k seeds count up from it.")
    output_dir: Path | None = Field(
        default=None, description="Where images are written; None = user_data_dir()/images."
    )

    def database_path(self) -> Path:
        """The SQLite file conversations are kept in."""
        return self.checkpoint_db or user_data_dir() / "conversations.sqlite"
