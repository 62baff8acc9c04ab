"""Session bookkeeping of the agent facade: session registry, per-session locks, text checks."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from diffagent.errors import BadInputError


def check_text(message: object) -> str:
    """`message` as a str that encodes to UTF-8; BadInputError names what is wrong."""
    if not isinstance(message, str):
        raise BadInputError(f"the message must be text, got {type(message).__name__}")
    try:
        message.encode("utf-8")
    except UnicodeEncodeError as error:
        raise BadInputError(
            f"the message is not valid text: character {error.start} is a lone UTF-16 "
            "surrogate; send the text as UTF-8"
        ) from None
    return message


class SessionLocks:
    """One lock per session id: turns of a session run in order, other sessions in parallel.

    A lock exists only while a turn holds or waits for it, so idle sessions cost nothing.
    """

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, tuple[threading.Lock, int]] = {}

    @contextmanager
    def hold(self, session_id: str) -> Iterator[None]:
        """Hold the session's lock for the duration of the block."""
        with self._guard:
            lock, users = self._locks.get(session_id, (threading.Lock(), 0))
            self._locks[session_id] = (lock, users + 1)
        try:
            with lock:
                yield
        finally:
            with self._guard:
                lock, users = self._locks[session_id]
                if users == 1:
                    del self._locks[session_id]
                else:
                    self._locks[session_id] = (lock, users - 1)

    def __len__(self) -> int:
        with self._guard:
            return len(self._locks)


class SessionRegistry:
    """Which session ids exist: a table beside the checkpoints, or a set when ephemeral.

    `lock` is the lock that guards the shared SQLite connection (the checkpointer's own), so
    registry statements never interleave with the checkpointer's transactions.
    """

    def __init__(self, conn: sqlite3.Connection | None, lock: threading.Lock) -> None:
        self._conn = conn
        self._lock = lock
        self._ids: set[str] = set()
        if conn is not None:
            with lock:
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS diffagent_sessions "
                    "(session_id TEXT PRIMARY KEY, created_at REAL NOT NULL)"
                )
                conn.commit()

    def add(self, session_id: str) -> None:
        """Record a new session id."""
        with self._lock:
            if self._conn is None:
                self._ids.add(session_id)
                return
            self._conn.execute(
                "INSERT INTO diffagent_sessions VALUES (?, ?)", (session_id, time.time())
            )
            self._conn.commit()

    def __contains__(self, session_id: object) -> bool:
        with self._lock:
            if self._conn is None:
                return session_id in self._ids
            row = self._conn.execute(
                "SELECT 1 FROM diffagent_sessions WHERE session_id = ?", (session_id,)
            ).fetchone()
            return row is not None
