"""Deterministic 8:1:1 splits of pairs by image, after removing repeated (version, prompt) pairs."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

SPLITS: tuple[str, ...] = ("train", "val", "test")
T = TypeVar("T")


class SplitConfig(BaseModel):
    """Split fractions and the seed that fixes the assignment."""

    model_config = ConfigDict(extra="forbid")

    seed: int = 0
    train: float = Field(default=0.8, gt=0.0, lt=1.0)
    val: float = Field(default=0.1, ge=0.0, lt=1.0)
    test: float = Field(default=0.1, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _sum_to_one(self) -> SplitConfig:
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"split fractions must sum to 1, got {total:.3f}")
        return self


def dedupe(items: Sequence[T], key: Callable[[T], object]) -> list[T]:
    """Keep the first item of each key, in order."""
    seen: set[object] = set()
    kept = []
    for item in items:
        value = key(item)
        if value not in seen:
            seen.add(value)
            kept.append(item)
    return kept


def split_by_group(
    items: Sequence[T], group: Callable[[T], int], config: SplitConfig
) -> dict[str, list[T]]:
    """Assign whole groups (images) to splits so item counts follow the fractions.

    Groups are shuffled by the seed, then filled into train, val and test in that order until each
    reaches its share of items; all items of a group land in one split.
    """
    groups: dict[int, list[T]] = {}
    for item in items:
        groups.setdefault(group(item), []).append(item)
    order = sorted(groups)
    random.Random(config.seed).shuffle(order)
    total = len(items)
    bounds = (config.train * total, (config.train + config.val) * total)
    result: dict[str, list[T]] = {name: [] for name in SPLITS}
    placed = 0
    for key in order:
        members = groups[key]
        midpoint = placed + len(members) / 2
        name = "train" if midpoint <= bounds[0] else "val" if midpoint <= bounds[1] else "test"
        result[name].extend(members)
        placed += len(members)
    return result
