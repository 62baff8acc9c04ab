"""Request ids in logs and responses, Prometheus metrics, and the per-client turn cap (429)."""

from __future__ import annotations

import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from diffagent.agent.settings import ServerSettings
from diffagent.errors import PlannerError
from diffagent.ui.server import create_app
from diffagent.ui.server_metrics import JsonFormatter, RequestIdFilter


class Agent:
    """Turns that sleep (message 'slow'), fail (message 'planner') or answer at once."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.waiting = 0

    def new_session(self) -> str:
        return "s1"

    def reply(self, session_id: str | None, message: str, *_: Any, **hooks: Any) -> dict[str, Any]:
        if message == "planner":
            raise PlannerError("the planner endpoint did not answer")
        if message == "slow":
            self.waiting += 1
            self.gate.wait(10)
        logging.getLogger("diffagent.agent.test").warning("turn for %s", message)
        return {"session_id": session_id or "s1", "reply": message}

    def history(self, session_id: str) -> list[dict[str, str]]:
        return []


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_count_turns_latency_and_errors(serve_app: Any) -> None:
    with serve_app(create_app(Agent(), token="tok")) as url:
        headers = {"Authorization": "Bearer tok"}
        with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
            assert client.post("/v1/chat", json={"message": "a cat"}).status_code == 200
            assert client.post("/v1/chat", json={"message": "planner"}).status_code == 502
            assert client.post("/v1/chat", json={"message": ""}).status_code == 422
        assert httpx.post(f"{url}/v1/chat", json={"message": "x"}).status_code == 401
        response = httpx.get(f"{url}/metrics")  # open, like /healthz: for the scraper
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    samples = _samples(response.text)
    assert samples[("diffagent_turn_seconds_count", (("outcome", "ok"),))] == 1
    assert samples[("diffagent_turn_seconds_count", (("outcome", "error"),))] == 1
    assert samples[("diffagent_turns_in_flight", ())] == 0
    errors = {
        labels: value
        for (name, labels), value in samples.items()
        if name == "diffagent_errors_total"
    }
    assert errors == {
        (("status", "502"), ("type", "PlannerError")): 1,
        (("status", "422"), ("type", "invalid_request_error")): 1,
        (("status", "401"), ("type", "authentication_error")): 1,
    }


def test_request_ids_reach_the_response_and_every_log_line(
    serve_app: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.handler.addFilter(RequestIdFilter())
    with caplog.at_level(logging.INFO), serve_app(create_app(Agent())) as url:
        given = httpx.post(
            f"{url}/v1/chat", json={"message": "a cat"}, headers={"X-Request-Id": "abc-123"}
        )
        made = httpx.post(f"{url}/v1/chat", json={"message": "a dog"})
        odd = httpx.get(f"{url}/healthz", headers={"X-Request-Id": "x" * 500})
    assert given.headers["X-Request-Id"] == "abc-123"
    assert len(made.headers["X-Request-Id"]) == 32
    assert len(odd.headers["X-Request-Id"]) == 32  # an unusable id is replaced
    turn_lines = [r for r in caplog.records if r.getMessage().startswith("turn for")]
    ids = {r.getMessage(): r.request_id for r in turn_lines}  # type: ignore[attr-defined]
    assert ids == {"turn for a cat": "abc-123", "turn for a dog": made.headers["X-Request-Id"]}
    access = [r for r in caplog.records if r.name == "diffagent.access"]
    assert {r.request_id for r in access} >= {"abc-123"}  # type: ignore[attr-defined]
    line = json.loads(JsonFormatter().format(access[0]))
    assert {"request_id", "method", "path", "status", "duration_ms"} <= set(line)


def test_one_client_may_run_a_limited_number_of_turns_at_once(serve_app: Any) -> None:
    agent, limit = Agent(), 2
    app = create_app(agent, server=ServerSettings(max_turns_per_client=limit))
    with serve_app(app) as url, ThreadPoolExecutor(limit) as pool:
        slow = [
            pool.submit(httpx.post, f"{url}/v1/chat", json={"message": "slow"}, timeout=30)
            for _ in range(limit)
        ]
        deadline = time.monotonic() + 10
        while agent.waiting < limit and time.monotonic() < deadline:
            time.sleep(0.02)  # until both slow turns hold their slots
        refused = httpx.post(f"{url}/v1/chat", json={"message": "a cat"}, timeout=30)
        other = httpx.post(
            f"{url}/v1/chat",
            json={"message": "a cat"},
            headers={"Authorization": "Bearer another-client"},
            timeout=30,
        )
        agent.gate.set()
        assert [future.result().status_code for future in slow] == [200] * limit
        after = httpx.post(f"{url}/v1/chat", json={"message": "a cat"}, timeout=30)
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "1"
    assert refused.json()["error"]["type"] == "rate_limit_error"
    assert other.status_code == 200  # another client is not held back by the first
    assert after.status_code == 200  # slots are given back when turns end


def test_serve_log_config_writes_json_lines_with_request_ids(capsys) -> None:
    import logging.config

    from diffagent.ui.server_metrics import json_log_config, request_id

    names = ("diffagent", "uvicorn", "uvicorn.error")
    saved = {n: (logging.getLogger(n).handlers[:], logging.getLogger(n).propagate) for n in names}
    try:
        logging.config.dictConfig(json_log_config())
        token = request_id.set("rid-7")
        logging.getLogger("diffagent.agent.x").info("hello %s", "there")
        request_id.reset(token)
    finally:
        for name, (handlers, propagate) in saved.items():
            logging.getLogger(name).handlers = handlers
            logging.getLogger(name).propagate = propagate
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert line["request_id"] == "rid-7" and line["message"] == "hello there"
    assert line["logger"] == "diffagent.agent.x" and line["level"] == "INFO"
