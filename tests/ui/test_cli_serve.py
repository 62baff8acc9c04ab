"""`diffagent serve`: options, one-line errors, (slow) a real server process restarted on its db."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from diffagent.ui.cli import build_parser, main


def test_serve_options_are_registered() -> None:
    args = build_parser().parse_args(
        ["serve", "--port", "9001", "--token", "t", "--mode", "retrieval"]
    )
    from diffagent.ui.cli_serve import serve_settings

    settings = serve_settings(args)
    server = settings.server
    assert (server.host, server.port, server.token, settings.planner.mode) == (
        "127.0.0.1",
        9001,
        "t",
        "retrieval",
    )
    assert args.handler.__name__ == "run_serve"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["serve", "--port", "0"], "--port 0 is outside 1-65535"),
        (["serve", "--catalog", "/no/such/catalog"], "no cards.jsonl in --catalog"),
        (["serve", "--workers", "2"], "--workers 2 needs --database-url (PostgreSQL)"),
    ],
)
def test_serve_bad_options_are_one_line_errors(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def _serve_process(catalog: Path, db: Path, port: int) -> Iterator[str]:
    command = [
        sys.executable,
        "-m",
        "diffagent.ui",
        "serve",
        "--port",
        str(port),
        "--mode",
        "retrieval",
        "--catalog",
        str(catalog),
        "--db",
        str(db),
        "--token",
        "tok",
    ]
    process = subprocess.Popen(command, env=dict(os.environ), stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while True:
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.25)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.mark.slow
def test_serve_process_restart_continues_the_session(agent_factory: object, tmp_path: Path) -> None:
    agent_factory()  # writes the test catalog beside the db
    catalog, db = tmp_path / "catalog", tmp_path / "served.sqlite"
    headers = {"Authorization": "Bearer tok"}
    with _serve_process(catalog, db, _free_port()) as url:
        first = httpx.post(
            f"{url}/v1/chat", json={"message": "a corgi, pixel art"}, headers=headers, timeout=120
        )
        assert first.status_code == 200, first.text
        session_id = first.json()["session_id"]
    with _serve_process(catalog, db, _free_port()) as url:
        second = httpx.post(
            f"{url}/v1/chat",
            json={"session_id": session_id, "message": "make it square"},
            headers=headers,
            timeout=120,
        )
        assert second.status_code == 200, second.text
        history = httpx.get(
            f"{url}/v1/sessions/{session_id}/history", headers=headers, timeout=30
        ).json()["messages"]
    assert [m["content"] for m in history if m["role"] == "user"] == [
        "a corgi, pixel art",
        "make it square",
    ]


def test_serve_wires_agent_token_and_limits(
    monkeypatch: pytest.MonkeyPatch, agent_factory: Any, tmp_path: Path
) -> None:
    import uvicorn
    from fastapi.testclient import TestClient

    from diffagent.ui import cli_serve

    served: dict[str, Any] = {}
    built: list[Path | None] = []

    def create_agent(settings: Any) -> Any:
        assert settings.paths.ephemeral is False  # conversations must outlive the process
        built.append(settings.paths.database)
        return agent_factory()

    monkeypatch.setattr(cli_serve, "_create_agent", create_agent)
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: served.update(app=app, **kwargs))
    monkeypatch.setenv(cli_serve.TOKEN_ENV, "from-env")
    db = tmp_path / "chats.sqlite"
    argv = ["serve", "--port", "8123", "--db", str(db), "--max-message-chars", "10"]
    assert main(argv) == 0
    assert (served["host"], served["port"], built) == ("127.0.0.1", 8123, [db])
    client = TestClient(served["app"])
    assert client.post("/v1/chat", json={"message": "hi"}).status_code == 401
    auth = {"Authorization": "Bearer from-env"}
    assert client.post("/v1/chat", json={"message": "hi"}, headers=auth).status_code == 200
    long = client.post("/v1/chat", json={"message": "x" * 11}, headers=auth)
    assert long.status_code == 422 and "at most 10" in long.json()["error"]["message"]
