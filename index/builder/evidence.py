"""Prompt evidence: every kept SFW sample prompt of each catalog version, with its image id.

Every such prompt shows what a model is used for, whether or not its image became an
instruction/API pair (a LoRA image whose base checkpoint did not resolve still counts). The file
keeps image ids so that an evaluation index can leave a split's images out.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from diffagent.index.builder.filters import SelectedVersion
from diffagent.index.builder.reverse_map import strip_extra_network_tags
from diffagent.index.catalog import EVIDENCE_FILE

__all__ = ["EVIDENCE_FILE", "version_evidence", "write_evidence"]


def version_evidence(item: SelectedVersion, min_chars: int = 3) -> list[tuple[int, str]]:
    """(image id, prompt without LoRA tags) of a version's kept sample images."""
    out = []
    for image in item.images:
        raw = str((image.get("meta") or {}).get("prompt") or "")
        prompt = " ".join(strip_extra_network_tags(raw).split())
        if len(prompt) >= min_chars and image.get("id") is not None:
            out.append((int(image["id"]), prompt))
    return out


def write_evidence(rows: Iterable[tuple[int, list[tuple[int, str]]]], path: Path) -> int:
    """Write `{"version_id", "prompts": [[image_id, prompt], ...]}` lines; return the count."""
    count = 0
    with path.open("w", encoding="utf-8") as handle:
        for version_id, prompts in rows:
            if prompts:
                record = {"version_id": version_id, "prompts": [list(p) for p in prompts]}
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
                count += len(prompts)
    return count
