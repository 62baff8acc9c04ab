"""REST server: the chat contract, sessions, and bad input answered with clear JSON errors."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from diffagent.errors import BadInputError, PlannerError
from diffagent.ui.server import create_app


def test_healthz_and_chat_creates_then_continues_a_session(served: str) -> None:
    with httpx.Client(base_url=served, timeout=30) as client:
        assert client.get("/healthz").json()["status"] == "ok"
        first = client.post("/v1/chat", json={"message": "a corgi, pixel art"})
        assert first.status_code == 200, first.text
        body = first.json()
        assert set(body) >= {"session_id", "reply", "api", "card", "repairs", "hallucinated"}
        assert set(body) >= {"images", "scores", "exports", "why"}
        second = client.post(
            "/v1/chat", json={"session_id": body["session_id"], "message": "make it square"}
        )
        assert second.status_code == 200, second.text
        assert second.json()["session_id"] == body["session_id"]
        assert body["intent"] == "image" and second.json()["changes"]
        history = client.get(f"/v1/sessions/{body['session_id']}/history").json()["messages"]
        assert [m["content"] for m in history if m["role"] == "user"] == [
            "a corgi, pixel art",
            "make it square",
        ]


@pytest.mark.parametrize(
    ("payload", "status", "words"),
    [
        ({"message": ""}, 422, "empty"),
        ({"message": "   \n "}, 422, "empty"),
        ({"message": "x" * 100_000}, 422, "at most"),
        ({}, 422, "message"),
        ({"message": 5}, 422, "message"),
        ({"message": "hi", "session_id": "no-such-session"}, 404, "unknown session_id"),
        ({"message": "hi", "colour": "red"}, 422, "colour"),
    ],
)
def test_bad_chat_input_gets_a_clear_json_error(
    served: str, payload: dict[str, Any], status: int, words: str
) -> None:
    response = httpx.post(f"{served}/v1/chat", json=payload, timeout=30)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert words in error["message"]
    assert error["code"] == status


def test_invalid_json_and_oversized_body(agent_factory: Callable[[], Any], serve_app: Any) -> None:
    app = create_app(agent_factory(), max_body_bytes=4096)
    with serve_app(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        bad = client.post(
            "/v1/chat", content=b'{"message": "hi"', headers={"content-type": "application/json"}
        )
        assert bad.status_code == 400
        assert "not valid JSON" in bad.json()["error"]["message"]
        big = client.post("/v1/chat", json={"message": "y" * 10_000})
        assert big.status_code == 413
        assert "4096 bytes" in big.json()["error"]["message"]

        def chunked() -> Any:  # no content-length: the limit counts streamed bytes
            yield b'{"message": "'
            for _ in range(10):
                yield b"z" * 1000
            yield b'"}'

        streamed = client.post(
            "/v1/chat", content=chunked(), headers={"content-type": "application/json"}
        )
        assert streamed.status_code == 413
        # The server is still healthy and the limit does not block normal requests.
        assert client.post("/v1/chat", json={"message": "still fine"}).status_code == 200


def test_bearer_token(agent_factory: Callable[[], Any], serve_app: Any) -> None:
    app = create_app(agent_factory(), token="s3cret")
    with serve_app(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        assert client.get("/healthz").status_code == 200  # liveness stays open
        missing = client.post("/v1/chat", json={"message": "hi"})
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"] == "Bearer"
        assert "bearer token" in missing.json()["error"]["message"]
        wrong = client.post(
            "/v1/chat", json={"message": "hi"}, headers={"Authorization": "Bearer nope"}
        )
        assert wrong.status_code == 401
        # Checked before the body is parsed: bad JSON from a stranger is still a 401.
        stranger = client.post(
            "/v1/chat", content=b"{", headers={"content-type": "application/json"}
        )
        assert stranger.status_code == 401
        ok = client.post(
            "/v1/chat", json={"message": "hi"}, headers={"Authorization": "Bearer s3cret"}
        )
        assert ok.status_code == 200, ok.text


def test_agent_errors_do_not_crash_the_server(serve_app: Any) -> None:
    class Broken:
        def new_session(self) -> str:
            return "s1"

        def reply(self, session_id: str, message: str, *_: Any, **hooks: Any) -> Any:
            if message == "value":
                raise BadInputError("prompt mentions nothing drawable")
            if message == "internal":
                raise ValueError("max() arg is an empty sequence")  # a bug, not the client's fault
            if message == "planner":
                raise PlannerError("the planner endpoint did not answer")
            raise RuntimeError("boom")

        def history(self, session_id: str) -> list[dict[str, str]]:
            return []

    with serve_app(create_app(Broken())) as url, httpx.Client(base_url=url, timeout=30) as client:
        value = client.post("/v1/chat", json={"message": "value"})
        assert value.status_code == 400
        assert value.json()["error"]["message"] == "prompt mentions nothing drawable"
        crash = client.post("/v1/chat", json={"message": "other"})
        assert crash.status_code == 500
        assert "RuntimeError" in crash.json()["error"]["message"]
        internal = client.post("/v1/chat", json={"message": "internal"})
        assert internal.status_code == 500
        assert internal.json()["error"]["type"] == "server_error"
        assert "ValueError" in internal.json()["error"]["message"]
        planner = client.post("/v1/chat", json={"message": "planner"})
        assert planner.status_code == 502
        assert planner.json()["error"]["message"] == "the planner endpoint did not answer"
        assert client.get("/healthz").status_code == 200


def test_agent_is_built_once_on_first_use(agent_factory: Callable[[], Any], serve_app: Any) -> None:
    calls = []

    def factory() -> Any:
        calls.append(1)
        return agent_factory()

    with serve_app(create_app(agent_factory=factory)) as url:
        assert httpx.get(f"{url}/healthz").json()["agent_loaded"] is False
        for _ in range(3):
            assert (
                httpx.post(f"{url}/v1/chat", json={"message": "hi"}, timeout=30).status_code == 200
            )
        assert httpx.get(f"{url}/healthz").json()["agent_loaded"] is True
    assert len(calls) == 1


def test_create_app_rejects_bad_arguments(agent_factory: Callable[[], Any]) -> None:
    with pytest.raises(ValueError, match="at most one"):
        create_app(agent_factory(), agent_factory=agent_factory)
    with pytest.raises(ValueError, match="max_body_bytes: Input should be greater than or equal"):
        create_app(agent_factory=agent_factory, max_body_bytes=10)


def test_generated_images_are_served_from_the_image_dir_only(
    tmp_path: Path, serve_app: Any
) -> None:
    images = tmp_path / "images"
    images.mkdir()
    (images / "abc-0.png").write_bytes(b"\x89PNG one")
    (images / "notes.txt").write_text("not an image")
    (tmp_path / "elsewhere.png").write_bytes(b"\x89PNG two")

    class Painter:
        def new_session(self) -> str:
            return "s1"

        def reply(
            self, session_id: str | None, message: str, *_: Any, **hooks: Any
        ) -> dict[str, Any]:
            paths = [str(images / "abc-0.png"), str(tmp_path / "elsewhere.png")]
            return {"session_id": session_id or "s1", "reply": "here", "images": paths}

        def history(self, session_id: str) -> list[dict[str, str]]:
            return []

    app = create_app(Painter(), image_dir=images, token="tok")
    headers = {"Authorization": "Bearer tok"}
    with serve_app(app) as url, httpx.Client(base_url=url, headers=headers, timeout=30) as client:
        body = client.post("/v1/chat", json={"message": "paint"}).json()
        assert body["image_urls"] == ["/v1/images/abc-0.png"]  # the other one is outside the dir
        assert client.get(body["image_urls"][0]).content == b"\x89PNG one"
        for name in ["notes.txt", "missing.png", "..%2Felsewhere.png"]:
            assert client.get(f"/v1/images/{name}").status_code == 404, name
        assert httpx.get(f"{url}{body['image_urls'][0]}").status_code == 401  # token needed


def test_slow_turns_run_in_parallel_and_health_stays_responsive(serve_app: Any) -> None:
    class Sleeper:
        def __init__(self) -> None:
            self.running = 0
            self.peak = 0
            self.lock = threading.Lock()

        def new_session(self) -> str:
            return "s"

        def reply(
            self, session_id: str | None, message: str, *_: Any, **hooks: Any
        ) -> dict[str, Any]:
            with self.lock:
                self.running += 1
                self.peak = max(self.peak, self.running)
            time.sleep(1.0)
            with self.lock:
                self.running -= 1
            return {"session_id": session_id or "s", "reply": message}

        def history(self, session_id: str) -> list[dict[str, str]]:
            return []

    agent = Sleeper()
    with serve_app(create_app(agent)) as url, httpx.Client(base_url=url, timeout=30) as client:
        assert client.get("/healthz").status_code == 200  # warm connection

        def ask(number: int) -> int:
            return httpx.post(
                f"{url}/v1/chat", json={"message": f"m{number}"}, timeout=30
            ).status_code

        with ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(ask, number) for number in range(8)]
            time.sleep(0.2)
            started = time.perf_counter()
            assert client.get("/healthz").status_code == 200
            health_seconds = time.perf_counter() - started
            assert [future.result() for future in futures] == [200] * 8
    assert agent.peak >= 4  # turns overlapped instead of queueing on the event loop
    assert health_seconds < 0.7  # answered while the turns were still sleeping
