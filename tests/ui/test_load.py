"""REST under load on loopback (real uvicorn): sessions never mix; restarts lose nothing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx

from diffagent.ui.server import create_app

SESSIONS = 20
TURNS = 5


async def _converse(client: httpx.AsyncClient, who: int) -> tuple[str, list[str]]:
    """One user: a session, then TURNS messages in order; returns (session_id, conversation)."""
    sent = [
        f"user {who} turn {turn}: a castle, variant {who * 100 + turn}" for turn in range(TURNS)
    ]
    session_id: str | None = None
    conversation: list[str] = []
    for message in sent:
        payload: dict[str, Any] = {"message": message}
        if session_id is not None:
            payload["session_id"] = session_id
        response = await client.post("/v1/chat", json=payload)
        assert response.status_code == 200, response.text
        body = response.json()
        assert session_id in (None, body["session_id"])
        session_id = body["session_id"]
        conversation += [message, body["reply"]]
    assert session_id is not None
    return session_id, conversation


async def _load(url: str) -> list[tuple[str, list[str]]]:
    limits = httpx.Limits(max_connections=SESSIONS)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        return await asyncio.gather(*(_converse(client, who) for who in range(SESSIONS)))


def _messages(url: str, session_id: str) -> list[str]:
    response = httpx.get(f"{url}/v1/sessions/{session_id}/history", timeout=30)
    assert response.status_code == 200, response.text
    messages = response.json()["messages"]
    # Strictly alternating user/assistant: no turn lost, none doubled.
    assert [m["role"] for m in messages] == ["user", "assistant"] * (len(messages) // 2)
    return [m["content"] for m in messages]


def test_twenty_concurrent_sessions_keep_their_own_history(
    agent_factory: Callable[[], Any], serve_app: Any
) -> None:
    with serve_app(create_app(agent_factory())) as url:
        started = time.perf_counter()
        results = asyncio.run(_load(url))
        elapsed = time.perf_counter() - started
        assert len({session_id for session_id, _ in results}) == SESSIONS
        for session_id, conversation in results:
            # Exactly this session's messages and the replies it was sent, in order.
            assert _messages(url, session_id) == conversation
    print(f"{SESSIONS} sessions x {TURNS} turns: {elapsed:.2f} s")


def test_session_continues_after_server_restart(
    agent_factory: Callable[[], Any], serve_app: Any
) -> None:
    with serve_app(create_app(agent_factory())) as url:
        first = httpx.post(f"{url}/v1/chat", json={"message": "a red fox, watercolor"}, timeout=60)
        assert first.status_code == 200, first.text
        session_id = first.json()["session_id"]
    # A new app and a new agent on the same checkpoint database: a restarted server.
    with serve_app(create_app(agent_factory())) as url:
        second = httpx.post(
            f"{url}/v1/chat",
            json={"session_id": session_id, "message": "make it square"},
            timeout=60,
        )
        assert second.status_code == 200, second.text
        assert _messages(url, session_id) == [
            "a red fox, watercolor",
            first.json()["reply"],
            "make it square",
            second.json()["reply"],
        ]
