"""Live Civitai REST crawler: cursor pagination, backoff on 429/5xx, resumable from a checkpoint.

The output is JSON Lines of raw items, the format `catalog build` reads. After each page the
items are flushed and the checkpoint records the next page's URL and the output's length, so an
interrupted crawl resumes where it stopped: bytes written after the last checkpoint are cut
off, and nothing is fetched or written twice.
"""

from __future__ import annotations

import email.utils
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlencode

import httpx
from pydantic import BaseModel, ConfigDict, Field
from tqdm import tqdm

RETRY_STATUS = frozenset({429, 500, 502, 503, 504})


class CrawlConfig(BaseModel):
    """What to crawl and how patiently."""

    model_config = ConfigDict(extra="forbid")

    base_url: str = "https://civitai.com/api/v1"
    endpoint: Literal["models", "images"] = "models"
    params: dict[str, str] = Field(default_factory=dict, description="Extra query parameters.")
    limit: int = Field(default=100, ge=1, le=200, description="Items per page.")
    api_key: str | None = Field(default=None, description="Sent as a Bearer token when set.")
    max_pages: int | None = Field(default=None, ge=1, description="Pages to fetch in this run.")
    max_retries: int = Field(default=6, ge=0)
    backoff_s: float = Field(default=1.0, ge=0.0, description="First wait; doubles per retry.")
    max_backoff_s: float = Field(default=120.0, ge=0.0)
    timeout_s: float = Field(default=60.0, gt=0.0)
    progress: bool = True


class CrawlState(BaseModel):
    """The checkpoint: where the crawl stands (written atomically after every page)."""

    model_config = ConfigDict(extra="forbid")

    endpoint: str
    params: dict[str, str]
    next_url: str | None = None
    pages_done: int = 0
    items_written: int = 0
    output_bytes: int = 0
    done: bool = False


def first_url(config: CrawlConfig) -> str:
    """URL of the first page."""
    query = {"limit": str(config.limit), **config.params}
    return f"{config.base_url.rstrip('/')}/{config.endpoint}?{urlencode(query)}"


def next_page_url(page: dict[str, Any], current: str) -> str | None:
    """The next page's URL from the response metadata (nextPage, else nextCursor), or None."""
    metadata = page.get("metadata") or {}
    if metadata.get("nextPage"):
        return str(metadata["nextPage"])
    cursor = metadata.get("nextCursor")
    if cursor in (None, ""):
        return None
    url = httpx.URL(current)
    return str(url.copy_set_param("cursor", str(cursor)))


def retry_after_seconds(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta seconds or an HTTP date), or None."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def load_state(checkpoint: Path, config: CrawlConfig) -> CrawlState | None:
    """The saved state, checked to belong to the same crawl; None when there is none."""
    if not checkpoint.is_file():
        return None
    state = CrawlState.model_validate_json(checkpoint.read_text(encoding="utf-8"))
    if state.endpoint != config.endpoint or state.params != config.params:
        raise ValueError(
            f"checkpoint {checkpoint} belongs to another crawl ({state.endpoint} {state.params}); "
            "use another --checkpoint or remove it"
        )
    return state


def save_state(state: CrawlState, checkpoint: Path) -> None:
    """Write the checkpoint atomically (temp file, fsync, rename)."""
    temp = checkpoint.with_name(checkpoint.name + ".tmp")
    with temp.open("w", encoding="utf-8") as handle:
        handle.write(state.model_dump_json(indent=2))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, checkpoint)


def request_headers(config: CrawlConfig) -> dict[str, str]:
    """Request headers, with the API key as a Bearer token when one is set."""
    headers = {"Accept": "application/json", "User-Agent": "diffagent-crawler"}
    if config.api_key:
        headers["Authorization"] = f"Bearer {config.api_key}"
    return headers


def fetch_page(
    client: httpx.Client,
    url: str,
    config: CrawlConfig,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """GET one page as JSON, retrying 429/5xx, broken connections and truncated bodies."""
    headers = request_headers(config)
    for attempt in range(config.max_retries + 1):
        wait = min(config.max_backoff_s, config.backoff_s * 2**attempt)
        try:
            response = client.get(url, headers=headers)
        except httpx.TransportError as error:  # refused, reset, incomplete body
            problem = f"{type(error).__name__}: {error}"
        else:
            if response.status_code in RETRY_STATUS:
                problem = f"HTTP {response.status_code}"
                hinted = retry_after_seconds(response.headers.get("Retry-After"))
                wait = wait if hinted is None else min(config.max_backoff_s, hinted)
            elif response.status_code >= 400:
                raise ValueError(
                    f"GET {url} failed: HTTP {response.status_code} {response.text[:200]}"
                )
            else:
                try:
                    page = response.json()
                except json.JSONDecodeError:
                    problem = "truncated or invalid JSON"
                else:
                    if isinstance(page, dict) and isinstance(page.get("items"), list):
                        return page
                    problem = "no 'items' list in the response"
        if attempt == config.max_retries:
            raise RuntimeError(f"GET {url} failed after {attempt + 1} tries: {problem}")
        sleep(wait)
    raise AssertionError("unreachable")


def crawl(
    config: CrawlConfig,
    out: Path,
    checkpoint: Path,
    *,
    client: httpx.Client | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> CrawlState:
    """Crawl pages into `out` (JSON Lines), resuming from `checkpoint`; return the final state."""
    out, checkpoint = Path(out), Path(checkpoint)
    state = load_state(checkpoint, config)
    if state is None:
        if out.exists() and out.stat().st_size > 0:
            raise ValueError(
                f"{out} exists but {checkpoint} does not; remove it or resume from its checkpoint"
            )
        state = CrawlState(endpoint=config.endpoint, params=config.params)
    if state.done:
        return state
    out.parent.mkdir(parents=True, exist_ok=True)
    own_client = client is None
    http = client or httpx.Client(timeout=config.timeout_s, follow_redirects=True)
    pages_this_run = 0
    try:
        with (
            out.open("a+b") as handle,
            tqdm(
                desc=f"crawl {config.endpoint}", unit=" pages", disable=not config.progress
            ) as bar,
        ):
            handle.truncate(state.output_bytes)  # drop a page written after the last checkpoint
            handle.seek(state.output_bytes)
            url = state.next_url or first_url(config)
            while config.max_pages is None or pages_this_run < config.max_pages:
                page = fetch_page(http, url, config, sleep)
                version_id = config.params.get("modelVersionId")
                for item in page["items"]:
                    if config.endpoint == "images" and version_id and version_id.isdigit():
                        item.setdefault("modelVersionId", int(version_id))
                    handle.write((json.dumps(item, ensure_ascii=False) + "\n").encode("utf-8"))
                handle.flush()
                os.fsync(handle.fileno())
                following = next_page_url(page, url) if page["items"] else None
                state.pages_done += 1
                state.items_written += len(page["items"])
                state.output_bytes = handle.tell()
                state.next_url = following
                state.done = following is None
                save_state(state, checkpoint)
                pages_this_run += 1
                bar.update(1)
                if state.done:
                    break
                url = following  # type: ignore[assignment]
    finally:
        if own_client:
            http.close()
    return state
