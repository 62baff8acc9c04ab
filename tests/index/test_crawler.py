import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from diffagent.index.builder.civitai import iter_items
from diffagent.index.builder.crawler import CrawlConfig, crawl, retry_after_seconds

N_PAGES = 4
PER_PAGE = 3


class Recorded:
    """Recorded pages of a cursor-paginated endpoint plus scripted failures per cursor."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.failures: dict[str, list[str]] = {}
        self.served: list[str] = []  # cursors answered with a full page
        self.auth: list[str | None] = []

    def page(self, cursor: str) -> dict[str, Any]:
        index = int(cursor or 0)
        items = [{"id": index * PER_PAGE + k, "modelVersions": []} for k in range(PER_PAGE)]
        metadata: dict[str, Any] = {}
        if index + 1 < N_PAGES:
            if index % 2:  # alternate the two ways Civitai names the next page
                metadata["nextPage"] = f"{self.base}/models?limit={PER_PAGE}&cursor={index + 1}"
            else:
                metadata["nextCursor"] = str(index + 1)
        return {"items": items, "metadata": metadata}


def _handler(recorded: Recorded) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802
            query = parse_qs(urlparse(self.path).query)
            if urlparse(self.path).path not in ("/api/v1/models", "/api/v1/images"):
                self._send(404, b'{"error": "not found"}')
                return
            recorded.auth.append(self.headers.get("Authorization"))
            cursor = query.get("cursor", [""])[0]
            body = json.dumps(recorded.page(cursor)).encode()
            failure = (recorded.failures.get(cursor) or [None]).pop(0)
            if failure == "429":
                self._send(429, b"slow down", {"Retry-After": "2"})
            elif failure == "500":
                self._send(500, b"oops")
            elif failure == "truncated":  # connection closes mid-body
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2])
                self.close_connection = True
            elif failure == "badjson":  # complete response, cut JSON
                self._send(200, body[: len(body) // 2])
            else:
                recorded.served.append(cursor)
                self._send(200, body)

        def _send(self, code: int, body: bytes, headers: dict[str, str] | None = None) -> None:
            self.send_response(code)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler


@pytest.fixture()
def server() -> Iterator[Recorded]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    base = f"http://127.0.0.1:{httpd.server_address[1]}/api/v1"
    recorded = Recorded(base)
    httpd.RequestHandlerClass = _handler(recorded)
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield recorded
    finally:
        httpd.shutdown()
        httpd.server_close()


def _config(server: Recorded, **overrides: Any) -> CrawlConfig:
    values: dict[str, Any] = {
        "base_url": server.base, "limit": PER_PAGE, "backoff_s": 0.5, "progress": False,
    }  # fmt: skip
    values.update(overrides)
    return CrawlConfig(**values)


def _ids(path: Path) -> list[int]:
    return [int(item["id"]) for item in iter_items(path)]


ALL_IDS = list(range(N_PAGES * PER_PAGE))


def test_full_crawl_survives_429_500_and_truncated_pages(server: Recorded, tmp_path: Path) -> None:
    server.failures = {"1": ["429"], "2": ["500", "truncated"], "3": ["badjson"]}
    waits: list[float] = []
    out, checkpoint = tmp_path / "models.jsonl", tmp_path / "state.json"
    state = crawl(_config(server, api_key="KEY"), out, checkpoint, sleep=waits.append)
    assert state.done and state.pages_done == N_PAGES and state.items_written == len(ALL_IDS)
    assert _ids(out) == ALL_IDS
    assert waits == [2.0, 0.5, 1.0, 0.5]  # Retry-After honoured, else doubling backoff
    assert server.served == ["", "1", "2", "3"]
    assert set(server.auth) == {"Bearer KEY"}
    assert crawl(_config(server), out, checkpoint).done  # a finished crawl does nothing more
    assert server.served == ["", "1", "2", "3"]


def test_resume_after_page_limit_and_torn_write(server: Recorded, tmp_path: Path) -> None:
    out, checkpoint = tmp_path / "models.jsonl", tmp_path / "state.json"
    state = crawl(_config(server, max_pages=2), out, checkpoint)
    assert not state.done and _ids(out) == ALL_IDS[: 2 * PER_PAGE]
    with out.open("a", encoding="utf-8") as handle:  # a crash while writing the next page
        handle.write('{"id": 6, "modelVersions": []}\n{"id": 7, "mode')
    state = crawl(_config(server), out, checkpoint)
    assert state.done and _ids(out) == ALL_IDS
    assert server.served == ["", "1", "2", "3"]


def test_resume_after_an_interruption_mid_retry(server: Recorded, tmp_path: Path) -> None:
    server.failures = {"2": ["500"]}
    out, checkpoint = tmp_path / "models.jsonl", tmp_path / "state.json"

    def interrupt(_: float) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        crawl(_config(server), out, checkpoint, sleep=interrupt)
    assert _ids(out) == ALL_IDS[: 2 * PER_PAGE]
    state = crawl(_config(server), out, checkpoint)
    assert state.done and _ids(out) == ALL_IDS
    assert server.served == ["", "1", "2", "3"]


def test_gives_up_after_max_retries(server: Recorded, tmp_path: Path) -> None:
    server.failures = {"": ["500", "500"]}
    with pytest.raises(RuntimeError, match="after 2 tries: HTTP 500"):
        crawl(
            _config(server, max_retries=1),
            tmp_path / "o.jsonl",
            tmp_path / "s.json",
            sleep=lambda _: None,
        )


def test_client_errors_and_mismatched_state_are_refused(server: Recorded, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="HTTP 404"):
        crawl(
            _config(server, base_url=server.base + "/v0"), tmp_path / "i.jsonl", tmp_path / "i.json"
        )
    out, checkpoint = tmp_path / "models.jsonl", tmp_path / "state.json"
    crawl(_config(server, max_pages=1), out, checkpoint)
    with pytest.raises(ValueError, match="another crawl"):
        crawl(_config(server, params={"types": "LORA"}), out, checkpoint)
    with pytest.raises(ValueError, match="exists but"):
        crawl(_config(server), out, tmp_path / "other-state.json")


def test_retry_after_header_forms() -> None:
    assert retry_after_seconds("3") == 3.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # a date in the past
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None


def test_images_of_one_version_carry_its_id(server: Recorded, tmp_path: Path) -> None:
    config = _config(server, endpoint="images", params={"modelVersionId": "1003"}, max_pages=1)
    crawl(config, tmp_path / "images.jsonl", tmp_path / "images.json")
    items = list(iter_items(tmp_path / "images.jsonl"))
    assert len(items) == PER_PAGE and {item["modelVersionId"] for item in items} == {1003}


def test_crawl_command(server: Recorded, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from diffagent.ui.cli import main

    out = tmp_path / "models.jsonl"
    args = ["catalog", "crawl", "--base-url", server.base, "--out", str(out), "--limit", "3"]
    assert main([*args, "--max-pages", "1"]) == 0
    assert "(resumable)" in capsys.readouterr().out
    assert main(args) == 0
    assert "(complete)" in capsys.readouterr().out
    assert _ids(out) == ALL_IDS and (tmp_path / "models.jsonl.checkpoint.json").is_file()
    assert main([*args, "--param", "broken"]) == 2
