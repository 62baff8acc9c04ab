"""One settings object for every interface: sections read from DIFFAGENT_* variables and flags.

Nested sections are set from the environment with a double underscore, e.g.
`DIFFAGENT_INDEX__CATALOG_DIR=/data/catalog`, `DIFFAGENT_PLANNER__MODE=retrieval`,
`DIFFAGENT_GENERATION__MODEL_STORE=~/models`, `DIFFAGENT_SCORING__HPS_PATH=hps.pt`,
`DIFFAGENT_SERVER__TOKEN=secret`. The command line, the REST server and the Chainlit app all
build their agent from `Settings`; command-line flags override it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from diffagent.agent.planner import PlannerConfig
from diffagent.paths import user_data_dir
from diffagent.tools.generate import GenerationConfig
from diffagent.tools.scoring import ScoringConfig

DEFAULT_MAX_BODY_BYTES = 1_000_000
DEFAULT_MAX_MESSAGE_CHARS = 20_000


class PathSettings(BaseModel):
    """Where conversations and images are kept (the data dir itself is `DIFFAGENT_HOME`)."""

    model_config = ConfigDict(extra="forbid")

    database: Path | None = Field(
        default=None,
        description="SQLite file of conversations; None = user_data_dir()/conversations.sqlite.",
    )
    ephemeral: bool = Field(
        default=False, description="Keep conversations in memory only (one-shot commands)."
    )
    output_dir: Path | None = Field(
        default=None, description="Where images are written; None = user_data_dir()/images."
    )

    def database_path(self) -> Path:
        """The SQLite file conversations are kept in."""
        return self.database or user_data_dir() / "conversations.sqlite"


class IndexSettings(BaseModel):
    """Which catalog and index the agent searches, and how many cards the planner sees."""

    model_config = ConfigDict(extra="forbid")

    catalog_dir: Path | None = Field(
        default=None, description="Catalog directory (cards.jsonl); None = the starter catalog."
    )
    index_dir: Path | None = Field(
        default=None, description="Index directory; None = beside the catalog or in user data."
    )
    top_k: int = Field(default=8, ge=1, le=50, description="Retrieved cards the planner sees.")
    chroma_url: str | None = Field(
        default=None,
        pattern=r"^https?://",
        description="Chroma server (`chroma run`) holding the dense channel, e.g. "
        "http://127.0.0.1:8010; None: a local PersistentClient in the index folder.",
    )


class ServerSettings(BaseModel):
    """Address, limits and access control of the REST server."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field(default="127.0.0.1", description="Bind address.")
    port: int = Field(default=8000, ge=1, le=65535, description="Port.")
    workers: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Server processes sharing the port; more than one needs `database_url`.",
    )
    token: str | None = Field(
        default=None, description="Bearer token required on /v1/*; None = open."
    )
    max_body_bytes: int = Field(default=DEFAULT_MAX_BODY_BYTES, ge=256, description="413 above.")
    max_message_chars: int = Field(
        default=DEFAULT_MAX_MESSAGE_CHARS, ge=1, description="422 above."
    )
    max_turns_per_client: int = Field(
        default=32,
        ge=1,
        description="Turns one client (bearer token, else address) may run at once; 429 above.",
    )


class CompositionSettings(BaseModel):
    """How a checkpoint is composed with LoRAs, one per concept of the prompt (agent/compose.py)."""

    model_config = ConfigDict(extra="forbid")

    max_loras: int = Field(default=3, ge=0, le=8, description="LoRAs at most (0: no composition).")
    max_weight: float = Field(default=1.2, gt=0, le=4, description="Weight of one LoRA at most.")
    max_total_weight: float = Field(
        default=2.0, gt=0, le=8, description="Sum of the LoRA weights at most (scaled down above)."
    )


class CritiqueSettings(BaseModel):
    """Generate, critique, retry (agent/critique.py): when to try the next candidates, how long."""

    model_config = ConfigDict(extra="forbid")

    min_score: float | None = Field(
        default=None, ge=0, le=1, description="Unified score below which the next cards are tried."
    )
    max_attempts: int = Field(default=3, ge=1, le=10, description="Cards tried per turn at most.")
    time_budget_s: float = Field(
        default=120.0, ge=0, description="Seconds the retries of one turn may take."
    )
    thumbnail_px: int = Field(default=128, ge=16, le=1024, description="Thumbnail side.")


class Settings(BaseSettings):
    """How a DiffAgent is built and served; every field has a working default."""

    model_config = SettingsConfigDict(
        env_prefix="DIFFAGENT_", env_nested_delimiter="__", extra="ignore"
    )

    database_url: str | None = Field(
        default=None,
        pattern=r"^postgres(ql)?://",
        description="postgresql://USER@HOST:PORT/DB: conversations and sessions on PostgreSQL "
        "(DIFFAGENT_DATABASE_URL); None: the SQLite file `paths.database`.",
    )
    database_pool_size: int = Field(
        default=32,
        ge=2,
        le=1000,
        description="PostgreSQL connections a process holds at most (one per running turn).",
    )
    paths: PathSettings = Field(default_factory=PathSettings)
    index: IndexSettings = Field(default_factory=IndexSettings)
    planner: PlannerConfig = Field(default_factory=PlannerConfig)
    generation: GenerationConfig | None = Field(
        default=None, description="Where weights are and how to generate; None = no images."
    )
    scoring: ScoringConfig | None = Field(
        default=None, description="Scorer weights; None = images are not scored."
    )
    server: ServerSettings = Field(default_factory=ServerSettings)
    composition: CompositionSettings = Field(default_factory=CompositionSettings)
    critique: CritiqueSettings = Field(default_factory=CritiqueSettings)
    seeds: int = Field(default=1, ge=1, le=16, description="Images per turn (k seeds).")
    seed: int = Field(default=0, ge=0, description="First seed; the k seeds count up from it.")
    allow_nsfw: bool = Field(default=False, description="Serve NSFW requests instead of declining.")

    def with_overrides(self, updates: dict[str, Any]) -> Settings:
        """A copy with dotted fields replaced, e.g. {"index.top_k": 4, "seeds": 2}.

        None values (flags that were not given) are skipped, so flags override the environment
        only where they are set. A section set to None (generation, scoring) is created.
        """
        data = self.model_dump()
        for dotted, value in updates.items():
            if value is None:
                continue
            *sections, name = dotted.split(".")
            target = data
            for section in sections:
                if target.get(section) is None:
                    target[section] = {}
                target = target[section]
            target[name] = value
        return Settings.model_validate(data)
