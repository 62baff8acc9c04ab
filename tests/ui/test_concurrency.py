"""Turns of different sessions run concurrently; turns of one session run in order, whole."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from diffagent.agent.service import DiffAgent

PLAN_SECONDS = 0.3
SESSIONS = 8
TAG = re.compile(r"\bs(\d+)t(\d)\b")


class SleepyPlanner:
    """Ranks in retrieval order after sleeping; records when each session's plan ran."""

    name = "sleepy"

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running = 0
        self.peak = 0
        self.spans: dict[str, list[tuple[float, float]]] = {}

    def complete(self, messages: list[dict[str, str]], **kwargs: Any) -> str:
        return "not JSON"

    def score_continuations(
        self, messages: list[dict[str, str]], continuations: list[str]
    ) -> list[float]:
        found = TAG.search(" ".join(m["content"] for m in messages))
        session = found.group(1) if found else "?"
        start = time.perf_counter()
        with self.lock:
            self.running += 1
            self.peak = max(self.peak, self.running)
        time.sleep(PLAN_SECONDS)  # thread-safe: no shared state touched while sleeping
        with self.lock:
            self.running -= 1
            self.spans.setdefault(session, []).append((start, time.perf_counter()))
        return [-0.1 * position for position in range(len(continuations))]


def test_sessions_run_concurrently_and_each_history_stays_in_order(
    agent_builder: Callable[..., Any], tmp_path: Path
) -> None:
    agent: DiffAgent = agent_builder(tmp_path / "conversations.sqlite")
    planner = SleepyPlanner()
    agent.context.backend = planner
    sessions = [agent.new_session() for _ in range(SESSIONS)]
    turns = [
        (number, session, text)
        for number, session in enumerate(sessions)
        for text in (f"s{number}t1 a corgi, pixel art", f"s{number}t2 a castle, oil painting")
    ]

    def run(turn: tuple[int, str, str]) -> str:
        return agent.reply(turn[1], turn[2]).session_id

    started = time.perf_counter()
    with ThreadPoolExecutor(len(turns)) as pool:  # both turns of a session race each other
        results = list(pool.map(run, turns))
    elapsed = time.perf_counter() - started
    serial = len(turns) * PLAN_SECONDS
    print(f"{len(turns)} turns in {elapsed:.2f} s (serial planning alone: {serial:.1f} s)")

    assert results == [session for _, session, _ in turns]
    assert planner.peak >= 4
    assert elapsed < serial / 2
    for number, session in enumerate(sessions):
        history = agent.history(session)
        assert [m["role"] for m in history] == ["user", "assistant"] * 2
        users = sorted(m["content"] for m in history if m["role"] == "user")
        assert users == [f"s{number}t1 a corgi, pixel art", f"s{number}t2 a castle, oil painting"]
        spans = sorted(planner.spans[str(number)])
        assert len(spans) == 2 and spans[0][1] <= spans[1][0]  # one session: one turn at a time
    assert len(agent._turn_locks) == 0  # per-session locks are dropped when idle
