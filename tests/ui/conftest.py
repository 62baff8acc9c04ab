"""Interface-test fixtures: the real agent facade (scripted planner), a real uvicorn server."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from diffagent.cards import ModelCard, write_cards
from diffagent.index.catalog import Catalog

from ..fakes import FakeIndex, ScriptedPlanner, make_card, settings_for

SQUARE, SQUARE_XL = (512, 512), (1024, 1024)
CARDS = [
    make_card(
        1001,
        "RealVision",
        tags=["photorealistic", "photo", "portrait", "lighthouse"],
        downloads=1001,
        size=SQUARE,
    ),
    make_card(
        1002, "AnimeMix", tags=["anime", "manga", "cat", "samurai"], downloads=1002, size=SQUARE
    ),
    make_card(
        1003,
        "PaintDream",
        tags=["painterly", "oil", "painting", "castle", "fantasy"],
        downloads=1003,
        size=SQUARE,
    ),
    make_card(
        1004, "PixelPerfect", tags=["pixel", "art", "corgi", "retro"], downloads=1004, size=SQUARE
    ),
    make_card(
        1005,
        "InkWash",
        tags=["ink", "wash", "watercolor", "koi", "forest"],
        downloads=1005,
        size=SQUARE,
    ),
    make_card(
        2001,
        "XL Photo",
        tags=["photorealistic", "photo", "cabin", "snow"],
        base="SDXL 1.0",
        downloads=2001,
        size=SQUARE_XL,
    ),
    make_card(
        2002,
        "XL Render",
        tags=["3d", "render", "astronaut", "digital"],
        base="SDXL 1.0",
        downloads=2002,
        size=SQUARE_XL,
    ),
]


def build_agent(
    db_path: Path, *, scripted: bool = True, database_url: str | None = None, **settings: Any
) -> Any:
    """The real DiffAgent facade on `db_path`, with the word index and the scripted planner.

    With `scripted=False` the configured planner (the embedded LLM by default) is used instead.
    `database_url` puts conversations on PostgreSQL; `settings` are more `settings_for` values.
    """
    from diffagent.agent.service import DiffAgent

    catalog_dir = db_path.parent / "catalog"
    if not (catalog_dir / "cards.jsonl").is_file():
        write_cards(CARDS, catalog_dir / "cards.jsonl")
    settings.setdefault("mode", "rank")
    config = settings_for(
        catalog_dir=catalog_dir, checkpoint_db=db_path, database_url=database_url, **settings
    )
    index = FakeIndex(Catalog.load(catalog_dir))
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


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """URL of a real PostgreSQL server started for this test session (skipped if not installed)."""
    from diffagent.tools.testing.servers import postgres_bin, postgres_server

    if postgres_bin() is None:
        pytest.skip("PostgreSQL is not installed: run .ci/services.sh (apt-get install postgresql)")
    with postgres_server(fsync=False) as url:  # in /tmp: the postgres user must reach it
        yield url


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
