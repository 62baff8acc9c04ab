"""Test-wide guards: no network beyond loopback, no hub downloads, clean skips for shared data."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from diffagent.paths import civitai_crawl, shared_data_dir

_OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "ANONYMIZED_TELEMETRY": "False",
    "TOKENIZERS_PARALLELISM": "false",
}
_LOOPBACK_PREFIXES = ("127.", "::1", "localhost", "0.0.0.0")
_real_connect = socket.socket.connect


def _guarded_connect(self: socket.socket, address: object) -> object:
    host = address[0] if isinstance(address, tuple) else address
    if (
        isinstance(host, str)
        and not host.startswith(_LOOPBACK_PREFIXES)
        and self.family
        in (
            socket.AF_INET,
            socket.AF_INET6,
        )
    ):
        raise RuntimeError(f"tests must not reach the network (tried {address!r})")
    return _real_connect(self, address)  # type: ignore[arg-type]


@pytest.fixture(autouse=True, scope="session")
def _offline_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Block non-loopback sockets and hub access; point DIFFAGENT_HOME at a temp folder."""
    saved = {key: os.environ.get(key) for key in [*_OFFLINE_ENV, "DIFFAGENT_HOME"]}
    os.environ.update(_OFFLINE_ENV)
    os.environ["DIFFAGENT_HOME"] = str(tmp_path_factory.mktemp("diffagent-home"))
    socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
    try:
        yield
    finally:
        socket.socket.connect = _real_connect  # type: ignore[method-assign]
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip `needs_shared_data` tests, with the reason, where ../shared/data is absent."""
    if shared_data_dir() is not None and civitai_crawl() is not None:
        return
    skip = pytest.mark.skip(
        reason="needs ../shared/data/civitai-models-2023-07.jsonl.gz (set DIFFAGENT_SHARED_DATA)"
    )
    for item in items:
        if "needs_shared_data" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def civitai_crawl_path() -> Path:
    """Path of the shared Civitai crawl (tests using it carry the needs_shared_data marker)."""
    path = civitai_crawl()
    assert path is not None
    return path
