"""SQLite cache of raw scores by (prompt, API key, seed, scorer), so none is computed twice."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS scores (
    prompt TEXT NOT NULL,
    api_key TEXT NOT NULL,
    seed INTEGER NOT NULL,
    scorer TEXT NOT NULL,
    value REAL NOT NULL,
    PRIMARY KEY (prompt, api_key, seed, scorer)
)
"""


class ScoreCache:
    """Raw scores on disk; `scorer` names a scorer and its weights (`hps:v2.0:ViT-H-14:...`)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False)
        with self._lock, self._db:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(_SCHEMA)

    def get_many(
        self, prompt: str, api_key: str, seeds: Iterable[int], scorer: str
    ) -> dict[int, float]:
        """Cached values for those seeds that have one."""
        seed_list = list(seeds)
        if not seed_list:
            return {}
        marks = ",".join("?" * len(seed_list))
        with self._lock:
            rows = self._db.execute(
                f"SELECT seed, value FROM scores WHERE prompt = ? AND api_key = ? AND scorer = ? "
                f"AND seed IN ({marks})",
                (prompt, api_key, scorer, *seed_list),
            ).fetchall()
        return {int(seed): float(value) for seed, value in rows}

    def put_many(self, prompt: str, api_key: str, values: dict[int, float], scorer: str) -> None:
        """Store values by seed (an existing entry is replaced)."""
        with self._lock, self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO scores (prompt, api_key, seed, scorer, value) "
                "VALUES (?, ?, ?, ?, ?)",
                [(prompt, api_key, seed, scorer, value) for seed, value in values.items()],
            )

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM scores").fetchone()[0])

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._db.close()
