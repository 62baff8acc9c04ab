"""REST latency under concurrent sessions: a real uvicorn server on loopback over the real agent.

    .venv/bin/python bench/bench_serve.py                          # starter catalog, retrieval mode
    .venv/bin/python bench/bench_serve.py --mode rank --sessions 4 --turns 3   # embedded planner

Prints per-turn latency (p50/p95/max), throughput, and whether every session's history holds
exactly its own messages in order.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx
import uvicorn

from diffagent.agent.planner import PlannerConfig
from diffagent.agent.service import DiffAgent
from diffagent.agent.settings import IndexSettings, PathSettings, Settings
from diffagent.ui.server import create_app

REFINEMENTS = ["make it square", "more painterly", "faster", "SDXL only", "no LoRA"]
SUBJECTS = ["a corgi, pixel art", "a lighthouse at dusk", "a samurai cat", "a koi pond, ink wash"]


async def _session(client: httpx.AsyncClient, who: int, turns: int) -> tuple[str, list, list]:
    messages = [f"{SUBJECTS[who % len(SUBJECTS)]} #{who}", *REFINEMENTS][:turns]
    latencies: list[float] = []
    session_id = None
    for message in messages:
        payload = {"message": message} | ({"session_id": session_id} if session_id else {})
        start = time.perf_counter()
        response = await client.post("/v1/chat", json=payload)
        latencies.append(time.perf_counter() - start)
        response.raise_for_status()
        session_id = response.json()["session_id"]
    assert session_id is not None
    return session_id, messages, latencies


async def _run(url: str, sessions: int, turns: int) -> list[tuple[str, list, list]]:
    limits = httpx.Limits(max_connections=sessions)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:
        return await asyncio.gather(*(_session(client, who, turns) for who in range(sessions)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalog", type=Path, default=None, help="Default: starter catalog.")
    parser.add_argument("--mode", choices=["retrieval", "rank", "generate"], default="retrieval")
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--turns", type=int, default=5)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        config = Settings(
            index=IndexSettings(catalog_dir=args.catalog),
            planner=PlannerConfig(mode=args.mode),
            paths=PathSettings(database=Path(scratch) / "chats.sqlite"),
        )
        started = time.perf_counter()
        agent = DiffAgent.create(config)
        print(f"agent built in {time.perf_counter() - started:.1f} s (mode {args.mode})")
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        server = uvicorn.Server(uvicorn.Config(create_app(agent), log_level="warning"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.01)
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        httpx.post(f"{url}/v1/chat", json={"message": "warm up"}, timeout=600).raise_for_status()

        started = time.perf_counter()
        results = asyncio.run(_run(url, args.sessions, args.turns))
        wall = time.perf_counter() - started
        intact = all(
            [m["content"] for m in agent.history(sid) if m["role"] == "user"] == sent
            for sid, sent, _ in results
        )
        server.should_exit = True
        thread.join(timeout=10)

    latencies = sorted(value for _, _, values in results for value in values)
    p95 = latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))]
    print(f"{args.sessions} sessions x {args.turns} turns = {len(latencies)} turns in {wall:.2f} s")
    print(f"throughput {len(latencies) / wall:.1f} turns/s")
    print(
        f"per-turn latency p50 {statistics.median(latencies) * 1000:.0f} ms, "
        f"p95 {p95 * 1000:.0f} ms, max {latencies[-1] * 1000:.0f} ms"
    )
    print(f"histories intact: {intact}")


if __name__ == "__main__":
    main()
