"""Serving at load: 20 sessions x 5 turns against `diffagent serve` with a 300 ms planner.

    nice .venv/bin/python bench/bench_serve_load.py                    # SQLite and PostgreSQL
    nice .venv/bin/python bench/bench_serve_load.py --db sqlite --skip-latency

Real processes on loopback: a stub OpenAI-compatible planner that answers after 300 ms
(`diffagent.tools.testing.stub_openai`) and `diffagent serve --planner openai` on the starter
catalog. For each database it prints (1) the same 100 turns run one after another and then as 20
concurrent sessions, the ratio, whether concurrent took at most 1/8 of serial, and whether every
history holds exactly its own turns in order; (2) p50/p95 turn latency at 1, 5 and 20 concurrent
sessions in retrieval and rank mode (rank: the stub planner scores the candidates).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

from serving import (
    Server,
    User,
    database,
    history,
    percentile,
    planner_calls,
    run_users,
    stub_planner,
)

SESSIONS, TURNS = 20, 5


def intact(url: str, users: list[User]) -> bool:
    """Every session holds exactly its acknowledged turns, in order, and nothing else."""
    ids = {user.session_id for user in users}
    return len(ids) == len(users) and all(
        [m["content"] for m in history(url, user.session_id or "")] == user.expected()
        for user in users
    )


def ratio_run(
    kind: str, stub: str, home: Path, delay_s: float, workers: int = 1
) -> dict[str, float | bool]:
    """Serial vs concurrent 20 x 5 in generate mode; every history checked."""
    with database(kind) as flags:
        server = Server(
            [*flags, "--mode", "generate", "--planner", "openai", "--base-url", stub],
            home,
            workers,
        )
        up = server.start()
        try:
            run_users(server.url, [User(who=999)], 1)  # warm-up (first query loads lazily)
            calls, cpu = planner_calls(stub), server.cpu_seconds()
            serial_users = [User(who=who) for who in range(SESSIONS)]
            serial = sum(run_users(server.url, [user], TURNS) for user in serial_users)
            serial_calls = planner_calls(stub) - calls
            cpu_serial, cpu = server.cpu_seconds() - cpu, server.cpu_seconds()
            concurrent_users = [User(who=100 + who) for who in range(SESSIONS)]
            concurrent = run_users(server.url, concurrent_users, TURNS)
            cpu_concurrent = server.cpu_seconds() - cpu
            memory = server.memory_mb()
            ok = intact(server.url, serial_users) and intact(server.url, concurrent_users)
        finally:
            server.stop()
    latencies = [value for user in concurrent_users for value in user.latencies]
    result = {
        "start_s": up,
        "serial_s": serial,
        "concurrent_s": concurrent,
        "ratio": serial / concurrent,
        "planner_calls_serial": serial_calls,
        "p50_concurrent_ms": statistics.median(latencies) * 1000,
        "p95_concurrent_ms": percentile(latencies, 0.95) * 1000,
        "intact": ok,
        "cpu_ms_per_turn_serial": cpu_serial * 1000 / (SESSIONS * TURNS),
        "cpu_ms_per_turn_concurrent": cpu_concurrent * 1000 / (SESSIONS * TURNS),
        "memory_mb": memory,
        "workers": workers,
    }
    print(
        f"[{kind}, {workers} worker(s)] generate mode, planner {delay_s * 1000:.0f} ms: "
        f"{SESSIONS}x{TURNS} serial "
        f"{serial:.2f} s ({serial_calls} planner calls), concurrent {concurrent:.2f} s, ratio "
        f"{serial / concurrent:.1f}x (target >= 8: {serial / concurrent >= 8}); "
        f"concurrent p50/p95 {result['p50_concurrent_ms']:.0f}/{result['p95_concurrent_ms']:.0f}"
        f" ms; histories intact: {ok}; server CPU per turn {result['cpu_ms_per_turn_serial']:.0f}"
        f" ms serial, {result['cpu_ms_per_turn_concurrent']:.0f} ms concurrent; server memory "
        f"{memory:.0f} MB; load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    return result


def latency_runs(kind: str, stub: str, home: Path) -> list[tuple[str, int, float, float, int]]:
    """p50/p95 per turn at 1, 5 and 20 concurrent sessions, retrieval and rank mode."""
    rows = []
    for mode in ("retrieval", "rank"):
        with database(kind) as flags:
            planner = ["--planner", "openai", "--base-url", stub] if mode == "rank" else []
            server = Server([*flags, "--mode", mode, *planner], home)
            server.start()
            try:
                run_users(server.url, [User(who=999)], 1)
                for sessions in (1, 5, 20):
                    turns = max(TURNS, 20 // sessions)
                    users = [User(who=1000 * sessions + who) for who in range(sessions)]
                    run_users(server.url, users, turns)
                    assert intact(server.url, users), f"{kind} {mode} {sessions}: histories broken"
                    values = [v for user in users for v in user.latencies]
                    rows.append(
                        (
                            mode,
                            sessions,
                            statistics.median(values) * 1000,
                            percentile(values, 0.95) * 1000,
                            len(values),
                        )
                    )
                    print(
                        f"[{kind}] {mode:9s} {sessions:2d} sessions: p50 {rows[-1][2]:.0f} ms, "
                        f"p95 {rows[-1][3]:.0f} ms ({len(values)} turns)",
                        flush=True,
                    )
            finally:
                server.stop()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--delay", type=float, default=0.3, help="Planner answer time (s).")
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="`diffagent serve --workers N` for the PostgreSQL ratio run (SQLite: always 1).",
    )
    parser.add_argument(
        "--home", type=Path, default=Path(tempfile.gettempdir()) / "diffagent-bench"
    )
    args = parser.parse_args()
    kinds = ["sqlite", "postgresql"] if args.db == "both" else [args.db]
    with stub_planner(args.delay) as stub:
        results = {
            kind: ratio_run(
                kind, stub, args.home, args.delay, args.workers if kind == "postgresql" else 1
            )
            for kind in kinds
        }
        tables = {} if args.skip_latency else {k: latency_runs(k, stub, args.home) for k in kinds}
    print(
        "\n| database | serial 100 turns | 20 concurrent sessions | ratio | <= 1/8 | histories "
        "| server CPU per turn |"
    )
    print("|---|---|---|---|---|---|---|")
    for kind, r in results.items():
        print(
            f"| {kind}, {r['workers']} worker(s) | {r['serial_s']:.1f} s | "
            f"{r['concurrent_s']:.2f} s | {r['ratio']:.1f}x | "
            f"{r['ratio'] >= 8} | {'intact' if r['intact'] else 'BROKEN'} | "
            f"{r['cpu_ms_per_turn_concurrent']:.0f} ms |"
        )
    if tables:
        print("\n| database | mode | sessions | p50 ms | p95 ms | turns |")
        print("|---|---|---|---|---|---|")
        for kind, rows in tables.items():
            for mode, sessions, p50, p95, count in rows:
                print(f"| {kind} | {mode} | {sessions} | {p50:.0f} | {p95:.0f} | {count} |")


if __name__ == "__main__":
    main()
