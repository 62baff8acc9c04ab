import random

import pytest

from diffagent.index.builder.splits import SplitConfig, dedupe, split_by_group


def _items(n_groups: int = 3000, seed: int = 1) -> list[tuple[int, int]]:
    rng = random.Random(seed)
    return [(group, k) for group in range(n_groups) for k in range(rng.choice([1, 1, 1, 2, 5]))]


def test_fractions_and_disjoint_groups() -> None:
    items = _items()
    split = split_by_group(items, lambda item: item[0], SplitConfig())
    total = len(items)
    assert sum(len(v) for v in split.values()) == total
    for name, share in (("train", 0.8), ("val", 0.1), ("test", 0.1)):
        assert abs(len(split[name]) / total - share) <= 0.01
    groups = {name: {item[0] for item in rows} for name, rows in split.items()}
    assert not groups["train"] & groups["val"]
    assert not groups["train"] & groups["test"]
    assert not groups["val"] & groups["test"]


def test_seed_decides_and_repeats() -> None:
    items = _items()
    first = split_by_group(items, lambda item: item[0], SplitConfig(seed=3))
    again = split_by_group(list(reversed(items)), lambda item: item[0], SplitConfig(seed=3))
    other = split_by_group(items, lambda item: item[0], SplitConfig(seed=4))
    assert {i[0] for i in first["val"]} == {i[0] for i in again["val"]}
    assert {i[0] for i in first["val"]} != {i[0] for i in other["val"]}


def test_custom_fractions() -> None:
    items = _items()
    split = split_by_group(items, lambda item: item[0], SplitConfig(train=0.6, val=0.2, test=0.2))
    assert abs(len(split["val"]) / len(items) - 0.2) <= 0.01
    with pytest.raises(ValueError, match="sum to 1"):
        SplitConfig(train=0.8, val=0.3, test=0.1)


def test_dedupe_keeps_first_of_each_key() -> None:
    rows = [("a", 1), ("b", 2), ("a", 3)]
    assert dedupe(rows, key=lambda row: row[0]) == [("a", 1), ("b", 2)]
