"""The files of an index folder: their names, the manifest, and where an index lives by default."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from diffagent.index.catalog import starter_catalog_dir
from diffagent.paths import user_data_dir

INDEX_FORMAT = 1
MANIFEST_FILE = "manifest.json"
FUSION_FILE = "fusion.json"
CHROMA_DIR = "chroma"
LEXICAL_DIR = "lexical"


class IndexManifest(BaseModel):
    """What the index on disk was built from (compared on open to decide what to rebuild)."""

    format: int = INDEX_FORMAT
    cards: int = 0
    dense_digest: str = ""
    lexical_digest: str = ""
    embedding: dict[str, Any] = Field(default_factory=dict)
    exclude_split: str | None = Field(
        default=None,
        description="Evaluation index: the split its evidence leaves out.",
    )

    @classmethod
    def read(cls, index_dir: Path) -> IndexManifest | None:
        """The manifest of `index_dir`, or None when the folder has none."""
        path = index_dir / MANIFEST_FILE
        if not path.is_file():
            return None
        return cls.model_validate_json(path.read_text(encoding="utf-8"))

    def write(self, index_dir: Path) -> None:
        """Write as `index_dir/manifest.json`."""
        (index_dir / MANIFEST_FILE).write_text(self.model_dump_json(indent=2), encoding="utf-8")


def default_index_dir(catalog_dir: Path) -> Path:
    """`catalog_dir/index`; under user_data_dir() for the packaged or a read-only catalog."""
    catalog_dir = Path(catalog_dir).resolve()
    packaged = catalog_dir == starter_catalog_dir().resolve()
    if not packaged and os.access(catalog_dir, os.W_OK):
        return catalog_dir / "index"
    key = hashlib.sha256(str(catalog_dir).encode()).hexdigest()[:12]
    return user_data_dir() / "indexes" / f"{catalog_dir.name}-{key}"
