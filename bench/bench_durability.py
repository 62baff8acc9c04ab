"""Durability: kill -9 `diffagent serve` in the middle of 20 sessions x 5 turns, restart, check.

    nice .venv/bin/python bench/bench_durability.py                   # SQLite and PostgreSQL
    nice .venv/bin/python bench/bench_durability.py --db postgresql --kill-after 40

Real processes on loopback: the stub planner (300 ms) and `diffagent serve --mode generate
--planner openai`. 20 users talk at once; after `--kill-after` acknowledged turns the server is
killed with SIGKILL while the other turns are in flight. It is restarted on the same database and
every session's history is read back: no acknowledged turn may be lost, duplicated, changed or
found in another session, and no half turn may be stored (a turn in flight at the kill may be
stored whole, unacknowledged). Then every user finishes its conversation and all histories are
checked once more.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import tempfile
import time
from pathlib import Path

import httpx
from serving import Server, User, database, history, message, one_turn, stub_planner

SESSIONS, TURNS = 20, 5
TAG = re.compile(r"^u(\d+)t(\d+):")


async def load_until_killed(server: Server, users: list[User], kill_after: int) -> float:
    """Run all users; SIGKILL the server once `kill_after` turns were acknowledged."""
    killed_at = 0.0

    async def user_turns(client: httpx.AsyncClient, user: User) -> None:
        try:
            for turn in range(len(user.acked), TURNS):
                await one_turn(client, user, message(user.who, turn))
        except httpx.HTTPError:
            pass  # the server died under this turn: it stays `in_flight`

    async def killer() -> None:
        nonlocal killed_at
        while sum(len(user.acked) for user in users) < kill_after:
            await asyncio.sleep(0.005)
        server.kill()
        killed_at = time.perf_counter()

    limits = httpx.Limits(max_connections=len(users) + 4)
    async with httpx.AsyncClient(base_url=server.url, timeout=120, limits=limits) as client:
        await asyncio.gather(killer(), *(user_turns(client, user) for user in users))
    return killed_at


def check(url: str, users: list[User]) -> dict[str, int]:
    """Compare each known session's stored history with what its user was acknowledged."""
    counts = {"lost": 0, "duplicated": 0, "mixed": 0, "half": 0, "changed": 0, "stored_unacked": 0}
    for user in users:
        if user.session_id is None:
            continue
        messages = history(url, user.session_id)
        roles = [m["role"] for m in messages]
        if roles != ["user", "assistant"] * (len(messages) // 2) or len(messages) % 2:
            counts["half"] += 1
        pairs = [
            (messages[i]["content"], messages[i + 1]["content"])
            for i in range(0, len(messages) - 1, 2)
        ]
        sent = [text for text, _ in pairs]
        counts["duplicated"] += len(sent) - len(set(sent))
        counts["mixed"] += sum(
            1 for text in sent if (m := TAG.match(text)) is None or int(m.group(1)) != user.who
        )
        acked = user.acked
        counts["lost"] += sum(1 for pair in acked if pair[0] not in sent)
        counts["changed"] += sum(1 for a, b in zip(acked, pairs, strict=False) if a != b)
        extra = pairs[len(acked) :]
        if len(extra) == 1 and extra[0][0] == user.in_flight:
            counts["stored_unacked"] += 1  # finished and stored whole, the answer never arrived
        elif extra:
            counts["mixed"] += len(extra)
    return counts


def run(kind: str, home: Path, kill_after: int, delay_s: float, workers: int = 1) -> bool:
    """One kill -9 run on one database; prints the figures; True when nothing was broken."""
    with stub_planner(delay_s) as stub, database(kind) as flags:
        server = Server(
            [*flags, "--mode", "generate", "--planner", "openai", "--base-url", stub],
            home,
            workers,
        )
        server.start()
        users = [User(who=who) for who in range(SESSIONS)]
        asyncio.run(load_until_killed(server, users, kill_after))
        acked = sum(len(user.acked) for user in users)
        in_flight = sum(1 for user in users if user.in_flight is not None)
        unknown = sum(1 for user in users if user.session_id is None)
        restart_s = server.start()
        counts = check(server.url, users)
        # Every user goes on: a turn that was stored without its answer counts as done.
        for user in users:
            if user.session_id is not None and user.in_flight is not None:
                stored = history(server.url, user.session_id)
                if len(stored) == 2 * (len(user.acked) + 1):
                    user.acked.append((stored[-2]["content"], stored[-1]["content"]))
            user.in_flight = None

        async def finish() -> None:
            limits = httpx.Limits(max_connections=len(users) + 4)
            async with httpx.AsyncClient(base_url=server.url, timeout=120, limits=limits) as c:

                async def rest(user: User) -> None:
                    for turn in range(len(user.acked), TURNS):
                        await one_turn(c, user, message(user.who, turn))

                await asyncio.gather(*(rest(user) for user in users))

        asyncio.run(finish())
        final = all(
            [m["content"] for m in history(server.url, user.session_id or "")] == user.expected()
            and len(user.acked) == TURNS
            for user in users
        )
        server.stop()
    broken = counts["lost"] + counts["duplicated"] + counts["mixed"] + counts["half"]
    broken += counts["changed"]
    c = counts
    print(
        f"[{kind}, {workers} worker(s)] kill -9 after {acked} acknowledged turns "
        f"({in_flight} in flight, {unknown} of them first turns); restarted in "
        f"{restart_s:.1f} s. Acknowledged turns lost {c['lost']}, changed {c['changed']}, "
        f"duplicated {c['duplicated']}, mixed between sessions {c['mixed']}, half turns "
        f"{c['half']}; in-flight turns stored whole without their answer: "
        f"{c['stored_unacked']}. After finishing, all {SESSIONS} histories exactly {TURNS} "
        f"turns in order: {final}",
        flush=True,
    )
    return broken == 0 and final


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--kill-after", type=int, default=50, help="Acknowledged turns first.")
    parser.add_argument("--delay", type=float, default=0.3, help="Planner answer time (s).")
    parser.add_argument(
        "--workers", type=int, default=1, help="`serve --workers N` on PostgreSQL (SQLite: 1)."
    )
    parser.add_argument(
        "--home", type=Path, default=Path(tempfile.gettempdir()) / "diffagent-bench"
    )
    args = parser.parse_args()
    kinds = ["sqlite", "postgresql"] if args.db == "both" else [args.db]
    results = {
        kind: run(
            kind, args.home, args.kill_after, args.delay, args.workers if kind != "sqlite" else 1
        )
        for kind in kinds
    }
    print("durability:", ", ".join(f"{k} {'OK' if ok else 'BROKEN'}" for k, ok in results.items()))
    raise SystemExit(0 if all(results.values()) else 1)


if __name__ == "__main__":
    main()
