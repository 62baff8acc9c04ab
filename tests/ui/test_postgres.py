"""Conversations on a real PostgreSQL server (langgraph-checkpoint-postgres), same code path."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from diffagent.agent.conversations import open_conversations
from diffagent.agent.settings import Settings
from diffagent.agent.streaming import TurnCancelledError
from diffagent.errors import DiffAgentError
from diffagent.tools.testing.servers import free_port
from diffagent.ui.server import create_app

from .test_load import _load, _messages


def test_rest_sessions_on_postgres_stay_whole_and_survive_a_restart(
    agent_builder: Callable[..., Any], serve_app: Any, postgres_url: str, tmp_path: Path
) -> None:
    db = tmp_path / "unused.sqlite"
    agent = agent_builder(db, database_url=postgres_url)
    assert agent.conversations.kind == "postgresql"
    with serve_app(create_app(agent)) as url:
        results = asyncio.run(_load(url))
        for session_id, conversation in results:
            assert _messages(url, session_id) == conversation
    agent.close()
    assert not db.exists()  # nothing went to SQLite

    with psycopg.connect(postgres_url) as conn:
        stored = {row[0] for row in conn.execute("SELECT thread_id FROM checkpoints")}
        registered = {row[0] for row in conn.execute("SELECT session_id FROM diffagent_sessions")}
    assert {session_id for session_id, _ in results} <= stored & registered

    # A new agent on the same database: a restarted server continues every session.
    again = agent_builder(db, database_url=postgres_url)
    with serve_app(create_app(again)) as url:
        session_id, conversation = results[0]
        more = httpx.post(
            f"{url}/v1/chat", json={"session_id": session_id, "message": "make it square"}
        )
        assert more.status_code == 200, more.text
        assert _messages(url, session_id) == [*conversation, "make it square", more.json()["reply"]]
    again.close()


def test_cancelled_turn_on_postgres_leaves_the_conversation_as_it_was(
    agent_builder: Callable[..., Any], postgres_url: str, tmp_path: Path
) -> None:
    agent = agent_builder(tmp_path / "unused.sqlite", database_url=postgres_url)
    session_id = agent.reply(None, "a red fox, watercolor").session_id
    before = agent.history(session_id)
    cancel = threading.Event()

    def cancel_at_plan(node: str, seconds: float | None, update: Any) -> None:
        if node == "plan" and seconds is None:
            cancel.set()

    with pytest.raises(TurnCancelledError):
        agent.reply(session_id, "make it anime", cancel_at_plan, cancel=cancel)
    assert agent.history(session_id) == before
    with pytest.raises(TurnCancelledError):  # a first turn, cancelled: no session is made
        agent.reply(None, "a castle", cancel_at_plan, cancel=cancel, new_id="never-made")
    assert not agent.has_session("never-made")
    with psycopg.connect(postgres_url) as conn:
        rows = conn.execute("SELECT count(*) FROM checkpoints WHERE thread_id = 'never-made'")
        assert rows.fetchone() == (0,)
    agent.close()


class SlowPlanner:
    """Ranks in retrieval order after a pause; records when each call ran."""

    name = "slow"

    def __init__(self, spans: list[tuple[float, float]], lock: threading.Lock) -> None:
        self.spans = spans
        self.lock = lock

    def complete(self, messages: list[dict[str, str]], **kwargs: Any) -> str:
        return "not JSON"

    def score_continuations(self, messages: Any, continuations: list[str]) -> list[float]:
        start = time.perf_counter()
        time.sleep(0.3)
        with self.lock:
            self.spans.append((start, time.perf_counter()))
        return [-0.1 * position for position in range(len(continuations))]


def test_turns_of_one_session_run_in_order_across_processes(
    agent_builder: Callable[..., Any], postgres_url: str, tmp_path: Path
) -> None:
    """Two agents on one database (two server processes): a session's turns never overlap."""
    spans: list[tuple[float, float]] = []
    lock = threading.Lock()
    first = agent_builder(tmp_path / "a.sqlite", database_url=postgres_url)
    second = agent_builder(tmp_path / "b.sqlite", database_url=postgres_url)
    session_id = first.reply(None, "a corgi, pixel art").session_id
    for agent in (first, second):
        agent.context.backend = SlowPlanner(spans, lock)
    texts = ["a castle, oil painting", "a koi pond, ink wash", "a lighthouse", "a samurai cat"]
    threads = [
        threading.Thread(target=agent.reply, args=(session_id, text))
        for agent, text in zip([first, second] * 2, texts, strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    ordered = sorted(spans)
    assert len(ordered) == 4
    assert all(a[1] <= b[0] for a, b in zip(ordered, ordered[1:], strict=False))
    history = second.history(session_id)
    assert [m["role"] for m in history] == ["user", "assistant"] * 5
    assert sorted(m["content"] for m in history[2::2]) == sorted(texts)
    first.close()
    second.close()


def test_unreachable_database_is_one_clear_error_without_the_password() -> None:
    url = f"postgresql://diffagent:secret@127.0.0.1:{free_port()}/nowhere"
    with pytest.raises(DiffAgentError) as caught:
        open_conversations(Settings(database_url=url))
    message = str(caught.value)
    assert "cannot use the conversation database" in message and "DIFFAGENT_DATABASE_URL" in message
    assert "secret" not in message and "diffagent:***@127.0.0.1" in message
    assert "\n" not in message
