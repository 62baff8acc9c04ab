"""True streaming: planner tokens reach the client as the planner writes them; leaving cancels."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import OpenAI

from diffagent.tools.testing.stub_openai import create_stub_app
from diffagent.ui.server import create_app
from diffagent.ui.server_openai import DRAFT_OPEN

PIECES = 8
INTERVAL_S = 0.15  # the stub planner writes for ~1 s: 8 pieces, 0.15 s apart


@pytest.fixture
def stub(serve_app: Any) -> Iterator[tuple[str, Any]]:
    """A slow streaming OpenAI-compatible planner on loopback: (base URL, its stats)."""
    app = create_stub_app(delay_s=0.05, interval_s=INTERVAL_S, n_pieces=PIECES)
    with serve_app(app) as url:
        yield f"{url}/v1", app.state.stats


@pytest.fixture
def generate_agent(agent_builder: Callable[..., Any], tmp_path: Path, stub: tuple[str, Any]) -> Any:
    """The real agent in generate mode with the stub as its OpenAI-compatible planner."""
    agent = agent_builder(
        tmp_path / "conversations.sqlite",
        scripted=False,
        mode="generate",
        **{"planner.backend": "openai", "planner.base_url": stub[0]},
    )
    yield agent
    agent.close()


def sse_events(response: httpx.Response) -> Iterator[tuple[float, str, Any]]:
    """(arrival time, event name, JSON data) of each server-sent event as it arrives."""
    name, data = "message", ""
    for line in response.iter_lines():
        if line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data = line[5:].strip()
        elif not line and data:
            yield time.monotonic(), name, json.loads(data) if data != "[DONE]" else data
            name, data = "message", ""


def wait_for(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_chat_streams_steps_and_planner_tokens_before_the_planner_finishes(
    generate_agent: Any, serve_app: Any, stub: tuple[str, Any]
) -> None:
    stats = stub[1]
    with serve_app(create_app(generate_agent)) as url, httpx.Client(timeout=30) as client:
        body = {"message": "a corgi, pixel art", "stream": True}
        with client.stream("POST", f"{url}/v1/chat", json=body) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            session_id = response.headers["X-Session-Id"]
            events = list(sse_events(response))
        history = httpx.get(f"{url}/v1/sessions/{session_id}/history").json()["messages"]

    names = [name for _, name, _ in events]
    tokens = [(at, data["text"]) for at, name, data in events if name == "token"]
    assert len(tokens) == PIECES
    planner_done = stats.finished[-1]
    # The first piece arrived while the planner was still writing (7 more pieces, ~1 s).
    assert tokens[0][0] < planner_done - 3 * INTERVAL_S
    assert json.loads("".join(text for _, text in tokens))["model"] == "PixelPerfect v1"
    steps = [(data["node"], data["status"]) for _, name, data in events if name == "step"]
    assert steps[0] == ("understand", "started")
    assert names.index("token") > names.index("step")  # steps are announced as they happen
    assert ("plan", "started") in steps and ("respond", "finished") in steps
    assert names[-1] == "done"
    done = events[-1][2]
    assert done["session_id"] == session_id and done["api"]["version_id"] == 1004
    assert [m["content"] for m in history] == ["a corgi, pixel art", done["reply"]]


def test_openai_stream_sends_content_before_the_planner_finishes(
    generate_agent: Any, serve_app: Any, stub: tuple[str, Any]
) -> None:
    stats = stub[1]
    with serve_app(create_app(generate_agent)) as url:
        client = OpenAI(base_url=f"{url}/v1", api_key="any", max_retries=0)
        stream = client.chat.completions.create(
            model="diffagent",
            messages=[{"role": "user", "content": "a castle, oil painting"}],
            stream=True,
        )
        arrivals, content, last = [], [], None
        for chunk in stream:
            piece = chunk.choices[0].delta.content
            if piece:
                arrivals.append(time.monotonic())
                content.append(piece)
            last = chunk
    assert arrivals[0] < stats.finished[-1] - 3 * INTERVAL_S
    text = "".join(content)
    assert text.startswith(DRAFT_OPEN)
    extra = last.model_extra["diffagent"]
    assert text.endswith(extra["reply"]) and extra["api"]["version_id"] == 1003


def test_client_that_disconnects_cancels_its_turn(
    generate_agent: Any, serve_app: Any, stub: tuple[str, Any]
) -> None:
    stats = stub[1]
    app = create_app(generate_agent)
    metrics = app.state.metrics
    with serve_app(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        first = client.post("/v1/chat", json={"message": "a koi pond, ink wash"})
        assert first.status_code == 200
        session_id = first.json()["session_id"]
        before = client.get(f"/v1/sessions/{session_id}/history").json()["messages"]
        finished_before = len(stats.finished)

        body = {"session_id": session_id, "message": "make it anime", "stream": True}
        with client.stream("POST", "/v1/chat", json=body) as response:
            for _, name, _ in sse_events(response):
                if name == "token":
                    break  # the client leaves in the middle of the planner's answer
        wait_for(lambda: metrics.turns_in_flight._value.get() == 0)
        assert stats.cancelled >= 1 and len(stats.finished) == finished_before  # planner cut off
        assert client.get(f"/v1/sessions/{session_id}/history").json()["messages"] == before

        # A plain (non-streaming) request whose client gives up is cancelled too.
        with pytest.raises(httpx.ReadTimeout):
            client.post("/v1/chat", json={**body, "stream": False}, timeout=0.4)
        wait_for(lambda: stats.cancelled >= 2 and metrics.turns_in_flight._value.get() == 0)
        assert client.get(f"/v1/sessions/{session_id}/history").json()["messages"] == before

        # A new session whose first turn is abandoned is never made.
        with client.stream("POST", "/v1/chat", json={"message": "a fox", "stream": True}) as r:
            new_id = r.headers["X-Session-Id"]
            next(name for _, name, _ in sse_events(r) if name == "token")
        wait_for(lambda: metrics.turns_in_flight._value.get() == 0)
        assert client.get(f"/v1/sessions/{new_id}/history").status_code == 404

        # The session goes on normally afterwards.
        again = client.post("/v1/chat", json={"session_id": session_id, "message": "square"})
        assert again.status_code == 200
        messages = client.get(f"/v1/sessions/{session_id}/history").json()["messages"]
        assert [m["content"] for m in messages] == [
            *[m["content"] for m in before],
            "square",
            again.json()["reply"],
        ]


class FailingAfterAStep:
    """An agent whose turn announces a step, then fails."""

    def new_session(self) -> str:
        return "s1"

    def history(self, session_id: str) -> list[dict[str, str]]:
        return []

    def reply(self, session_id: str | None, message: str, on_step: Any = None, **hooks: Any):
        if on_step is not None:
            on_step("understand", None, None)
        raise RuntimeError("boom")


def test_errors_before_the_first_event_are_http_errors_after_it_an_error_event(
    generate_agent: Any, serve_app: Any
) -> None:
    with serve_app(create_app(generate_agent)) as url:
        unknown = httpx.post(
            f"{url}/v1/chat", json={"session_id": "nope", "message": "hi", "stream": True}
        )
        assert unknown.status_code == 404 and unknown.json()["error"]["code"] == 404
        openai_unknown = httpx.post(
            f"{url}/v1/chat/completions",
            headers={"X-Session-Id": "nope"},
            json={"stream": True, "messages": [{"role": "user", "content": "hi"}]},
        )
        assert openai_unknown.status_code == 404
    with serve_app(create_app(FailingAfterAStep())) as url, httpx.Client(timeout=30) as client:
        body = {"message": "a fox", "stream": True}
        with client.stream("POST", f"{url}/v1/chat", json=body) as response:
            assert response.status_code == 200
            events = [(name, data) for _, name, data in sse_events(response)]
        assert [name for name, _ in events] == ["step", "error"]
        assert events[-1][1]["error"]["code"] == 500
