"""Shared parts of the serving benches: real `diffagent serve` processes, the stub planner, users.

Imported by bench_serve_load.py and bench_durability.py (run from the repository root).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

from diffagent.tools.testing.servers import free_port, postgres_server

BIN = Path(sys.executable).parent
SUBJECTS = [
    "a corgi, pixel art",
    "a lighthouse at dusk, oil painting",
    "a samurai cat, anime",
    "a koi pond, ink wash",
    "a snowy cabin, photo",
    "an astronaut, 3d render",
]


def message(who: int, turn: int) -> str:
    """User `who`'s message number `turn`: a new description each time (the planner runs)."""
    return f"u{who}t{turn}: {SUBJECTS[(who + turn) % len(SUBJECTS)]}, variant {who * 10 + turn}"


def wait_until_up(
    url: str, process: subprocess.Popen[bytes], workers: int = 1, timeout_s: float = 300
) -> None:
    """Wait until `url/healthz` has answered from `workers` processes (exiting is an error)."""
    deadline = time.monotonic() + timeout_s
    seen: set[int] = set()
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            with httpx.Client() as client:  # a new connection: any worker may answer
                response = client.get(f"{url}/healthz", timeout=2)
            if response.status_code == 200:
                seen.add(int(response.json().get("worker", 0)))
                if len(seen) >= workers:
                    return
                continue
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not come up in {timeout_s:.0f} s")
        time.sleep(0.2)


@contextmanager
def stub_planner(delay_s: float = 0.3) -> Iterator[str]:
    """The stub OpenAI-compatible planner in its own process; yields its base URL (…/v1)."""
    port = free_port()
    command = [sys.executable, "-m", "diffagent.tools.testing.stub_openai", "--port", str(port)]
    process = subprocess.Popen([*command, "--delay", str(delay_s)])  # noqa: S603
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{url}/stats", timeout=2)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "stub planner did not start"
                time.sleep(0.1)
        yield f"{url}/v1"
    finally:
        process.terminate()
        process.wait(timeout=10)


def planner_calls(stub_url: str) -> int:
    """Requests the stub planner has answered so far."""
    return int(httpx.get(stub_url.removesuffix("/v1") + "/stats").json()["finished"])


@contextmanager
def database(kind: str) -> Iterator[list[str]]:
    """A fresh conversation database; yields the `diffagent serve` flags that select it."""
    if kind == "postgresql":
        with postgres_server() as url:
            yield ["--database-url", url]
        return
    with tempfile.TemporaryDirectory() as scratch:
        yield ["--db", str(Path(scratch) / "conversations.sqlite")]


class Server:
    """One `diffagent serve` process (started, killed with SIGKILL, restarted on the same flags)."""

    def __init__(self, flags: list[str], home: Path, workers: int = 1) -> None:
        self.flags = [*flags, "--workers", str(workers)] if workers > 1 else flags
        self.workers = workers
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "DIFFAGENT_HOME": str(home), "ANONYMIZED_TELEMETRY": "False"}
        self.process: subprocess.Popen[bytes] | None = None
        self.log = tempfile.NamedTemporaryFile(prefix="diffagent-serve-", suffix=".log")  # noqa: SIM115

    def start(self) -> float:
        """Start it and wait until it answers; return the seconds that took."""
        started = time.perf_counter()
        self.process = subprocess.Popen(  # noqa: S603
            [str(BIN / "diffagent"), "serve", "--port", str(self.port), *self.flags],
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_until_up(self.url, self.process, self.workers)
        return time.perf_counter() - started

    def _tree(self) -> list[psutil.Process]:
        assert self.process is not None
        parent = psutil.Process(self.process.pid)
        return [parent, *parent.children(recursive=True)]

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the server's processes have used so far."""
        return sum(float(p.cpu_times().user + p.cpu_times().system) for p in self._tree())

    def memory_mb(self) -> float:
        """Resident memory of the server's processes, MB."""
        return sum(p.memory_info().rss for p in self._tree()) / 2**20

    def kill(self) -> None:
        """Send SIGKILL (kill -9) to every server process: no shutdown code runs."""
        assert self.process is not None
        for process in reversed(self._tree()):
            process.kill()
        self.process.wait()

    def stop(self) -> None:
        """Stop it politely."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)


@dataclass
class User:
    """One simulated user: the turns it sent, what was acknowledged, and turn latencies."""

    who: int
    session_id: str | None = None
    acked: list[tuple[str, str]] = field(default_factory=list)
    in_flight: str | None = None
    latencies: list[float] = field(default_factory=list)

    def expected(self) -> list[str]:
        """The history the server must hold for the acknowledged turns."""
        return [text for pair in self.acked for text in pair]


async def one_turn(client: httpx.AsyncClient, user: User, text: str) -> None:
    """Send one turn; record it as acknowledged only when the full answer came back."""
    payload = {"message": text} | ({"session_id": user.session_id} if user.session_id else {})
    user.in_flight = text
    started = time.perf_counter()
    response = await client.post("/v1/chat", json=payload)
    response.raise_for_status()
    body = response.json()
    user.latencies.append(time.perf_counter() - started)
    user.session_id = body["session_id"]
    user.acked.append((text, body["reply"]))
    user.in_flight = None


async def converse(client: httpx.AsyncClient, user: User, turns: int, start: int = 0) -> None:
    """User turns `start`..`turns-1`, one after another."""
    for turn in range(start, turns):
        await one_turn(client, user, message(user.who, turn))


def history(url: str, session_id: str) -> list[dict[str, str]]:
    """A session's stored messages."""
    response = httpx.get(f"{url}/v1/sessions/{session_id}/history", timeout=60)
    response.raise_for_status()
    return list(response.json()["messages"])


def run_users(url: str, users: list[User], turns: int) -> float:
    """Run every user's conversation at once; return the wall time."""

    async def main() -> None:
        limits = httpx.Limits(max_connections=len(users) + 4)
        async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:
            await asyncio.gather(*(converse(client, user, turns) for user in users))

    started = time.perf_counter()
    asyncio.run(main())
    return time.perf_counter() - started


def percentile(values: list[float], share: float) -> float:
    """The `share` percentile (nearest rank) of `values`."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]
