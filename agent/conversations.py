"""Where conversations live: a LangGraph checkpointer and the session registry, one interface.

`open_conversations(settings)` picks the store: PostgreSQL (`langgraph-checkpoint-postgres`)
when `settings.database_url` is set, else the SQLite file `settings.paths.database`, or memory
for one-shot commands. The agent uses every store the same way: `checkpointer` for the graph,
`sessions` (add, `in`), `turn_lock(session_id)` around a turn and `close()`.
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any, Protocol

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.sqlite import SqliteSaver

from diffagent.agent.sessions import SessionRegistry
from diffagent.agent.settings import Settings
from diffagent.errors import DiffAgentError

SESSION_TABLE = (
    "CREATE TABLE IF NOT EXISTS diffagent_sessions "
    "(session_id TEXT PRIMARY KEY, created_at DOUBLE PRECISION NOT NULL)"
)


class Sessions(Protocol):
    """Which session ids exist."""

    def add(self, session_id: str) -> None:
        """Record a new session id."""
        ...

    def __contains__(self, session_id: object) -> bool:
        """Whether `session_id` was recorded."""
        ...


class Conversations(Protocol):
    """A conversation store: checkpoints, session ids, a lock per session across processes."""

    kind: str
    checkpointer: BaseCheckpointSaver[Any]
    sessions: Sessions

    def turn_lock(self, session_id: str) -> AbstractContextManager[None]:
        """Hold the session against turns of other processes on the same database."""
        ...

    def close(self) -> None:
        """Release connections; safe to call twice."""
        ...


class MemoryConversations:
    """Conversations kept in this process only (one-shot commands, `paths.ephemeral`)."""

    kind = "memory"

    def __init__(self) -> None:
        self.checkpointer: BaseCheckpointSaver[Any] = InMemorySaver()
        self.sessions: Sessions = SessionRegistry(None, threading.Lock())

    def turn_lock(self, session_id: str) -> AbstractContextManager[None]:
        """No other process can see these conversations: nothing to hold."""
        return nullcontext()

    def close(self) -> None:
        """Nothing to release."""


class SqliteConversations:
    """Conversations in one SQLite file (WAL): the embedded default, one server process."""

    kind = "sqlite"

    def __init__(self, settings: Settings) -> None:
        path = settings.paths.database_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn: sqlite3.Connection | None = sqlite3.connect(str(path), check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.commit()
        saver = SqliteSaver(self._conn)
        self.checkpointer: BaseCheckpointSaver[Any] = saver
        self._lock = saver.lock
        # SqliteSaver guards every use of the shared connection with its own lock; the
        # session table is written under the same lock.
        self.sessions: Sessions = SessionRegistry(self._conn, saver.lock)

    def turn_lock(self, session_id: str) -> AbstractContextManager[None]:
        """One process per SQLite file is supported: the agent's own per-session lock suffices."""
        return nullcontext()

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


class PostgresSessions:
    """The session registry as a table beside the checkpoints in PostgreSQL."""

    def __init__(self, pool: Any) -> None:
        self._pool = pool
        with pool.connection() as conn:
            conn.execute(SESSION_TABLE)

    def add(self, session_id: str) -> None:
        """Record a new session id."""
        with self._pool.connection() as conn:
            conn.execute(
                "INSERT INTO diffagent_sessions VALUES (%s, %s)", (session_id, time.time())
            )

    def __contains__(self, session_id: object) -> bool:
        with self._pool.connection() as conn:
            row = conn.execute(
                "SELECT 1 FROM diffagent_sessions WHERE session_id = %s", (session_id,)
            ).fetchone()
        return row is not None


class PostgresConversations:
    """Conversations in PostgreSQL: any number of server processes share them.

    Checkpoints go through `PostgresSaver` (which runs one statement at a time per process, so a
    small pool serves it and the session table). A turn holds a session-level advisory lock on a
    connection of a second pool, so turns of one session run in order across processes too.
    """

    kind = "postgresql"

    def __init__(self, url: str, pool_size: int = 32) -> None:
        import psycopg  # noqa: PLC0415
        from langgraph.checkpoint.postgres import PostgresSaver  # noqa: PLC0415
        from psycopg.rows import dict_row  # noqa: PLC0415
        from psycopg_pool import ConnectionPool  # noqa: PLC0415

        try:  # one plain connection first: a wrong URL is one clear error, at once
            psycopg.connect(url, connect_timeout=10).close()
        except psycopg.Error as error:
            shown = re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)
            first = (str(error).strip() or type(error).__name__).splitlines()[0]
            raise DiffAgentError(
                f"cannot use the conversation database {shown} ({first}); "
                "check DIFFAGENT_DATABASE_URL / --database-url"
            ) from None
        options = {"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row}
        self._pool = ConnectionPool(
            url,
            min_size=1,
            max_size=4,
            kwargs=options,
            check=ConnectionPool.check_connection,
            open=True,
        )
        self._lock_pool = ConnectionPool(
            url, min_size=0, max_size=pool_size, kwargs={"autocommit": True}, open=True
        )
        try:
            self._pool.wait(timeout=30)
            saver = PostgresSaver(self._pool)  # type: ignore[arg-type]
            saver.setup()
            self.sessions: Sessions = PostgresSessions(self._pool)
        except BaseException:
            self.close()
            raise
        self.checkpointer: BaseCheckpointSaver[Any] = saver

    @contextmanager
    def _advisory(self, session_id: str) -> Iterator[None]:
        key = int.from_bytes(hashlib.sha256(session_id.encode()).digest()[:8], "big", signed=True)
        with self._lock_pool.connection() as conn:
            conn.execute("SELECT pg_advisory_lock(%s)", (key,))
            try:
                yield
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (key,))

    def turn_lock(self, session_id: str) -> AbstractContextManager[None]:
        """Hold the session's advisory lock (released when the block ends or the process dies)."""
        return self._advisory(session_id)

    def close(self) -> None:
        """Close both connection pools."""
        self._lock_pool.close()
        self._pool.close()


def open_conversations(settings: Settings) -> Conversations:
    """The conversation store the settings ask for: PostgreSQL, SQLite or memory."""
    if settings.paths.ephemeral:
        return MemoryConversations()
    if settings.database_url:
        return PostgresConversations(settings.database_url, settings.database_pool_size)
    return SqliteConversations(settings)
