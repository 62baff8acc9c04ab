"""Interface-test fixtures: the real agent facade (scripted planner), a real uvicorn server."""

from __future__ import annotations

import difflib
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from diffagent.index.cards import CardFile, CardStats, ModelCard, RecommendedParams, write_cards
from diffagent.index.catalog import Catalog


def make_card(version_id: int, name: str, tags: list[str], base: str = "SD 1.5") -> ModelCard:
    """A small but complete catalog card."""
    arch, size = ("sdxl", 1024) if base == "SDXL 1.0" else ("sd1", 512)
    return ModelCard(
        version_id=version_id,
        model_id=version_id // 10,
        air=f"urn:air:{arch}:checkpoint:civitai:{version_id // 10}@{version_id}",
        name=name,
        version_name="v1",
        type="Checkpoint",
        base_model=base,  # type: ignore[arg-type]
        tags=tags,
        description=f"{name}: a {base} checkpoint for {', '.join(tags)}.",
        stats=CardStats(downloads=version_id, rating=4.5, rating_count=10),
        file=CardFile(
            name=f"{name.lower().replace(' ', '_')}.safetensors",
            format="SafeTensor",
            sha256=f"{version_id:064X}",
            url=f"https://civitai.com/api/download/models/{version_id}",
        ),
        recommended=RecommendedParams(
            width=size,
            height=size,
            sampling_method="DPM++ 2M Karras",
            sampling_steps=25,
            cfg_scale=7.0,
        ),
    )


CARDS = [
    make_card(1001, "RealVision", ["photorealistic", "photo", "portrait", "lighthouse"]),
    make_card(1002, "AnimeMix", ["anime", "manga", "cat", "samurai"]),
    make_card(1003, "PaintDream", ["painterly", "oil", "painting", "castle", "fantasy"]),
    make_card(1004, "PixelPerfect", ["pixel", "art", "corgi", "retro"]),
    make_card(1005, "InkWash", ["ink", "wash", "watercolor", "koi", "forest"]),
    make_card(2001, "XL Photo", ["photorealistic", "photo", "cabin", "snow"], base="SDXL 1.0"),
    make_card(2002, "XL Render", ["3d", "render", "astronaut", "digital"], base="SDXL 1.0"),
]


@dataclass
class Hit:
    card: ModelCard
    score: float
    lexical_score: float | None = None
    dense_score: float | None = None


@dataclass
class WordIndex:
    """A fast stand-in for CatalogIndex (word overlap), so interface tests need no embeddings."""

    catalog: Catalog

    def _pool(self, base_model: str | None, model_type: str | None) -> list[ModelCard]:
        return [
            card
            for card in self.catalog
            if base_model in (None, card.base_model) and model_type in (None, card.type)
        ]

    def query(
        self,
        text: str,
        k: int = 10,
        *,
        base_model: str | None = None,
        model_type: str | None = None,
    ) -> list[Hit]:
        words = set(re.findall(r"[a-z0-9]+", text.lower()))
        hits = [
            Hit(
                card,
                len(words & set(card.tags) | words & {card.name.lower()}) + 1e-6 * card.version_id,
            )
            for card in self._pool(base_model, model_type)
        ]
        return sorted(hits, key=lambda hit: -hit.score)[:k]

    def nearest_by_name(
        self, name: str, k: int = 5, *, base_model: str | None = None, model_type: str | None = None
    ) -> list[Hit]:
        hits = [
            Hit(card, difflib.SequenceMatcher(None, name.lower(), card.name.lower()).ratio())
            for card in self._pool(base_model, model_type)
        ]
        return sorted(hits, key=lambda hit: -hit.score)[:k]


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


def build_agent(db_path: Path, *, scripted: bool = True) -> Any:
    """The real DiffAgent facade on `db_path`, with the word index and the scripted planner.

    With `scripted=False` the configured planner (the embedded LLM by default) is used instead.
    """
    from diffagent.agent.service import AgentConfig, DiffAgent

    catalog_dir = db_path.parent / "catalog"
    if not (catalog_dir / "cards.jsonl").is_file():
        write_cards(CARDS, catalog_dir / "cards.jsonl")
    config = AgentConfig(catalog_dir=catalog_dir, checkpoint_db=db_path, mode="rank")
    index = WordIndex(Catalog.load(catalog_dir))
    backend = ScriptedPlanner() if scripted else None
    return DiffAgent.create(config, backend=backend, index=index)


@contextmanager
def serve(app: Any) -> Iterator[str]:
    """Run `app` with a real uvicorn server in a thread on a free loopback port; yield its URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture
def serve_app() -> Callable[[Any], Any]:
    """The `serve` context manager, for tests that start and stop servers themselves."""
    return serve


@pytest.fixture
def agent_builder() -> Callable[..., Any]:
    """`build_agent(db_path, scripted=True)`, for tests that need a non-default agent."""
    return build_agent


@pytest.fixture
def catalog_cards() -> list[ModelCard]:
    """The cards of the test catalog."""
    return CARDS


@pytest.fixture
def agent_factory(tmp_path: Path) -> Callable[[], Any]:
    """Build agents on one checkpoint db in tmp_path (a second call = a restarted server)."""
    return lambda: build_agent(tmp_path / "conversations.sqlite")


@pytest.fixture
def served(agent_factory: Callable[[], Any]) -> Iterator[str]:
    """URL of a live server (no token) over a fresh agent."""
    from diffagent.ui.server import create_app

    with serve(create_app(agent_factory())) as url:
        yield url
