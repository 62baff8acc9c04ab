"""Where DiffAgent keeps its own data and where it finds the shared Civitai data."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

REPO_ROOT = Path(__file__).resolve().parent.parent


def user_data_dir() -> Path:
    """Directory for caches, indexes and converted weights (`DIFFAGENT_HOME` overrides)."""
    override = os.environ.get("DIFFAGENT_HOME")
    path = Path(override) if override else Path(platformdirs.user_data_dir("diffagent"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def shared_data_dir() -> Path | None:
    """The shared data folder (`DIFFAGENT_SHARED_DATA` overrides `../shared/data`), or None."""
    override = os.environ.get("DIFFAGENT_SHARED_DATA")
    path = Path(override) if override else REPO_ROOT.parent / "shared" / "data"
    return path if path.is_dir() else None


def civitai_crawl() -> Path | None:
    """The raw Civitai crawl in the shared data folder, or None when it is absent."""
    root = shared_data_dir()
    if root is None:
        return None
    path = root / "civitai-models-2023-07.jsonl.gz"
    return path if path.is_file() else None
