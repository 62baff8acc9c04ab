"""Prompt evidence per card: SFW sample prompts, a split left out, near-duplicates collapsed.

The production index uses every prompt; an evaluation index for a split leaves that split's
images out, so its figures stay honest. Near-duplicate prompts of one card (identical normalised
text, or token sets with Jaccard >= 0.8) are collapsed so that one prolific uploader does not
dominate a card.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

from diffagent.index.catalog import Catalog, iter_evidence
from diffagent.index.search.lexical import tokenize

JACCARD_DUPLICATE = 0.8
SPLITS = ("train", "val", "test")


def split_image_ids(catalog_dir: Path, split: str) -> frozenset[int]:
    """Image ids of the pairs of one split (`pairs/<split>.jsonl`); empty when absent."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; allowed: {', '.join(SPLITS)}")
    path = Path(catalog_dir) / "pairs" / f"{split}.jsonl"
    if not path.is_file():
        return frozenset()
    ids = set()
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                image_id = json.loads(line).get("image_id")
                if image_id is not None:
                    ids.add(int(image_id))
    return frozenset(ids)


def collapse_near_duplicates(
    prompts: Sequence[tuple[int, str]], threshold: float = JACCARD_DUPLICATE
) -> list[tuple[int, str]]:
    """Greedily, in image-id order, keep a prompt unless it nearly repeats a kept one."""
    kept: list[tuple[int, str]] = []
    seen: list[tuple[str, frozenset[str]]] = []
    for image_id, prompt in sorted(prompts):
        tokens = tokenize(prompt)
        text, token_set = " ".join(tokens), frozenset(tokens)
        duplicate = any(
            text == other_text
            or (
                bool(token_set | other_set)
                and len(token_set & other_set) / len(token_set | other_set) >= threshold
            )
            for other_text, other_set in seen
        )
        if not duplicate:
            kept.append((image_id, prompt))
            seen.append((text, token_set))
    return kept


def card_evidence(
    catalog: Catalog, exclude_images: Iterable[int] = ()
) -> dict[int, list[tuple[int, str]]]:
    """Version id -> collapsed [(image id, prompt)] of the catalog's cards, some images left out."""
    excluded = set(exclude_images)
    evidence: dict[int, list[tuple[int, str]]] = {}
    for version_id, prompts in iter_evidence(catalog.directory):
        if catalog.get(version_id) is None:
            continue
        kept = [(image_id, prompt) for image_id, prompt in prompts if image_id not in excluded]
        evidence[version_id] = collapse_near_duplicates(kept)
    return evidence
