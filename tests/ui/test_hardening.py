"""REST hardening: tokens, invalid text, atomic turns, unread bodies, long ids, images, health."""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from diffagent.ui.server import create_app


def _sessions(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT count(*) FROM diffagent_sessions").fetchone()[0])


def _threads(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT count(DISTINCT thread_id) FROM checkpoints").fetchone()[0])


@pytest.fixture
def agent(agent_factory: Callable[[], Any]) -> Any:
    """The real agent; a message containing 'explode' makes retrieval fail inside the graph."""
    built = agent_factory()
    query = built.context.index.query

    def failing_query(text: str, *args: Any, **kwargs: Any) -> Any:
        if "explode" in text:
            raise RuntimeError("index went away")
        return query(text, *args, **kwargs)

    built.context.index.query = failing_query
    return built


@pytest.fixture
def url(agent: Any, serve_app: Any) -> Iterator[str]:
    with serve_app(create_app(agent)) as base:
        yield base


@pytest.mark.parametrize(
    ("configured", "sent", "status"),
    [
        ("s3cret", "Bearer tök", 401),
        ("s3cret", "Bearer 😀", 401),
        ("tök-😀", "Bearer tök-😀", 200),
        ("tök-😀", "Bearer tok", 401),
        ("tök-😀", "Bearer s3cret", 401),
    ],
)
def test_non_ascii_tokens_are_compared_as_bytes(
    agent: Any, serve_app: Any, configured: str, sent: str, status: int
) -> None:
    with serve_app(create_app(agent, token=configured)) as base:
        headers = {"Authorization": sent.encode("utf-8")}
        response = httpx.post(f"{base}/v1/sessions", headers=headers, timeout=30)
        assert response.status_code == status, response.text
        assert httpx.get(f"{base}/healthz").status_code == 200


def _post(url: str, body: dict[str, Any]) -> httpx.Response:
    # json.dumps escapes a lone surrogate as \\ud800: valid JSON that decodes to invalid text.
    content = json.dumps(body).encode()
    headers = {"content-type": "application/json"}
    return httpx.post(f"{url}/v1/chat", content=content, headers=headers, timeout=30)


def test_lone_surrogate_is_422_and_stores_nothing(url: str, tmp_path: Path) -> None:
    db = tmp_path / "conversations.sqlite"
    first = _post(url, {"message": "a corgi, pixel art"}).json()
    before = (_sessions(db), _threads(db))
    for message in ["\ud800", "a cat \udfff", "\ud83d"]:
        bad = _post(url, {"message": message, "session_id": first["session_id"]})
        assert bad.status_code == 422 and "surrogate" in bad.json()["error"]["message"]
        assert _post(url, {"message": message}).status_code == 422
    history = httpx.get(f"{url}/v1/sessions/{first['session_id']}/history").json()["messages"]
    assert [m["role"] for m in history] == ["user", "assistant"]
    assert (_sessions(db), _threads(db)) == before


def test_a_failed_turn_is_not_stored(url: str, tmp_path: Path) -> None:
    db = tmp_path / "conversations.sqlite"
    first = _post(url, {"message": "a corgi, pixel art"}).json()
    session = first["session_id"]
    failed = _post(url, {"message": "explode the castle", "session_id": session})
    assert failed.status_code == 500
    later = _post(url, {"message": "make it square", "session_id": session})
    api = later.json()["api"]
    assert later.status_code == 200 and api["width"] == api["height"]
    history = httpx.get(f"{url}/v1/sessions/{session}/history").json()["messages"]
    assert [(m["role"], m["content"]) for m in history if m["role"] == "user"] == [
        ("user", "a corgi, pixel art"),
        ("user", "make it square"),
    ]
    assert [m["role"] for m in history] == ["user", "assistant"] * 2
    # Without a session id, a failed first turn leaves no session and no checkpoints behind.
    before = (_sessions(db), _threads(db))
    assert _post(url, {"message": "explode everything"}).status_code == 500
    assert (_sessions(db), _threads(db)) == before
    created = _post(url, {"message": "a lighthouse, photo"})
    assert created.status_code == 200 and _sessions(db) == before[0] + 1


def test_a_failed_first_turn_of_a_created_session_leaves_it_empty(url: str) -> None:
    session = httpx.post(f"{url}/v1/sessions").json()["session_id"]
    assert _post(url, {"message": "explode", "session_id": session}).status_code == 500
    assert httpx.get(f"{url}/v1/sessions/{session}/history").json()["messages"] == []
    assert _post(url, {"message": "a koi, ink wash", "session_id": session}).status_code == 200
    history = httpx.get(f"{url}/v1/sessions/{session}/history").json()["messages"]
    assert [m["content"] for m in history if m["role"] == "user"] == ["a koi, ink wash"]


@pytest.mark.parametrize("text", [5, None, ["a"], {"t": 1}])
def test_completion_parts_with_non_string_text_are_422(url: str, text: Any) -> None:
    body = {"messages": [{"role": "user", "content": [{"type": "text", "text": text}]}]}
    response = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=30)
    assert response.status_code == 422, response.text
    assert "must be a string" in response.json()["error"]["message"]


def test_unread_bodies_are_limited_too(agent: Any, serve_app: Any) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(32):
            yield b"x" * 65_536  # 2 MiB in chunks, no content-length

    with serve_app(create_app(agent)) as base:
        for path in ["/v1/sessions", "/v1/models", "/healthz"]:
            response = httpx.post(f"{base}{path}", content=chunks(), timeout=30)
            assert response.status_code == 413, (path, response.text)
        assert httpx.post(f"{base}/v1/sessions", content=b"{}", timeout=30).status_code == 200


@pytest.mark.parametrize("length", [129, 10_000, 900_000])
def test_long_session_ids_are_refused_without_echoing_them(url: str, length: int) -> None:
    session = "a" * length
    response = _post(url, {"message": "a cat", "session_id": session})
    assert response.status_code == 422 and len(response.content) < 1000
    if length <= 10_000:
        history = httpx.get(f"{url}/v1/sessions/{session}/history", timeout=30)
        assert history.status_code == 404 and len(history.content) < 1000
        body = {"messages": [{"role": "user", "content": "a cat"}], "user": session}
        completion = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=30)
        assert completion.status_code == 404 and len(completion.content) < 1000


@pytest.mark.parametrize("session", ["../etc", "a b", "x;y", "ü"])
def test_session_ids_outside_the_charset_are_refused(url: str, session: str) -> None:
    assert _post(url, {"message": "a cat", "session_id": session}).status_code == 422


def test_symlinks_in_the_image_folder_are_not_served(tmp_path: Path, serve_app: Any) -> None:
    images = tmp_path / "images"
    images.mkdir()
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0")
    (images / "real.png").write_bytes(b"\x89PNG real")
    os.symlink(secret, images / "passwd.png")
    os.symlink(images / "real.png", images / "alias.png")

    class Painter:
        def new_session(self) -> str:
            return "s1"

        def reply(
            self, session_id: str | None, message: str, *_: Any, **hooks: Any
        ) -> dict[str, Any]:
            paths = [str(images / name) for name in ["real.png", "passwd.png", "alias.png"]]
            return {"session_id": "s1", "reply": "here", "images": paths}

        def history(self, session_id: str) -> list[dict[str, str]]:
            return []

    with serve_app(create_app(Painter(), image_dir=images)) as base:
        body = httpx.post(f"{base}/v1/chat", json={"message": "paint"}, timeout=30).json()
        assert body["image_urls"] == ["/v1/images/real.png"]
        assert httpx.get(f"{base}/v1/images/real.png").content == b"\x89PNG real"
        for name in ["passwd.png", "alias.png"]:
            response = httpx.get(f"{base}/v1/images/{name}")
            assert response.status_code == 404 and b"root" not in response.content


def test_health_reports_a_built_agent_as_loaded(agent: Any, serve_app: Any) -> None:
    with serve_app(create_app(agent)) as base:
        assert httpx.get(f"{base}/healthz").json()["agent_loaded"] is True
