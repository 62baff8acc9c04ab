"""Interface-test fixtures: a fast scripted agent and a real uvicorn server on loopback."""

from __future__ import annotations

import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from pydantic import BaseModel, Field

from diffagent.ui.server import UnknownSessionError


class FakeTurn(BaseModel):
    session_id: str
    reply: str
    api: dict[str, Any] | None = None
    card: dict[str, Any] | None = None
    why: str = ""
    repairs: list[dict[str, Any]] = Field(default_factory=list)
    hallucinated: bool = False
    images: list[str] = Field(default_factory=list)
    scores: dict[str, Any] | None = None
    exports: dict[str, str] = Field(default_factory=dict)


class FakeAgent:
    """Replies 'echo: MESSAGE (turn N)'; keeps each session's history in a SQLite file."""

    def __init__(self, db_path: Path) -> None:
        self._db = sqlite3.connect(db_path, check_same_thread=False)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS msg (sid TEXT, n INTEGER, role TEXT, content TEXT)"
        )
        self._db.execute("CREATE TABLE IF NOT EXISTS sess (sid TEXT PRIMARY KEY)")
        self._db.commit()
        self._lock = threading.Lock()

    def new_session(self) -> str:
        sid = uuid.uuid4().hex
        with self._lock:
            self._db.execute("INSERT INTO sess VALUES (?)", (sid,))
            self._db.commit()
        return sid

    def _known(self, sid: str) -> bool:
        return self._db.execute("SELECT 1 FROM sess WHERE sid=?", (sid,)).fetchone() is not None

    def reply(self, session_id: str, message: str) -> FakeTurn:
        with self._lock:
            if not self._known(session_id):
                raise UnknownSessionError(session_id)
            n = self._db.execute("SELECT COUNT(*) FROM msg WHERE sid=?", (session_id,)).fetchone()[
                0
            ]
            answer = f"echo: {message} (turn {n // 2 + 1})"
            rows = [(session_id, n, "user", message), (session_id, n + 1, "assistant", answer)]
            self._db.executemany("INSERT INTO msg VALUES (?, ?, ?, ?)", rows)
            self._db.commit()
        api = {"model": "Fake Model", "version_id": 1, "width": 512, "height": 512}
        return FakeTurn(
            session_id=session_id,
            reply=answer,
            api=api,
            why="it is fake",
            exports={"diffusers": "pipe = ..."},
        )

    def history(self, session_id: str) -> list[dict[str, str]]:
        with self._lock:
            if not self._known(session_id):
                raise UnknownSessionError(session_id)
            rows = self._db.execute(
                "SELECT role, content FROM msg WHERE sid=? ORDER BY n", (session_id,)
            ).fetchall()
        return [{"role": role, "content": content} for role, content in rows]


def build_agent(db_path: Path) -> Any:
    """The agent the interface tests drive, on the given checkpoint database."""
    return FakeAgent(db_path)


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
def agent_factory(tmp_path: Path) -> Callable[[], Any]:
    """Build agents on one checkpoint db in tmp_path (a second call = a restarted server)."""
    return lambda: build_agent(tmp_path / "conversations.sqlite")


@pytest.fixture
def served(agent_factory: Callable[[], Any]) -> Iterator[str]:
    """URL of a live server (no token) over a fresh agent."""
    from diffagent.ui.server import create_app

    with serve(create_app(agent_factory())) as url:
        yield url
