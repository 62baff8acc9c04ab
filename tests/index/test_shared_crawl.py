"""Checks of a full build on the shared Civitai crawl (about 30 s)."""

import json
import re
import time
from pathlib import Path

import pytest

from diffagent.api import T2IApi
from diffagent.index.builder.build import BuildConfig, build_catalog
from diffagent.index.builder.civitai import iter_models
from diffagent.index.builder.filters import DEFAULT_NSFW_TERMS, PromptGuard

pytestmark = pytest.mark.needs_shared_data


@pytest.fixture(scope="module")
def build(civitai_crawl_path: Path) -> tuple[object, float]:
    started = time.perf_counter()
    result = build_catalog([civitai_crawl_path], BuildConfig(progress=False))
    return result, time.perf_counter() - started


@pytest.fixture(scope="module")
def raw_facts(civitai_crawl_path: Path) -> tuple[set[int], dict[int, str]]:
    nsfw_models: set[int] = set()
    image_rating: dict[int, str] = {}
    for model in iter_models([civitai_crawl_path]):
        if model.get("nsfw"):
            nsfw_models.add(int(model["id"]))
        for version in model["modelVersions"]:
            for image in version.get("images") or []:
                image_rating[int(image["id"])] = str(image.get("nsfw"))
    return nsfw_models, image_rating


def test_build_is_fast_and_keeps_about_ten_thousand_versions(build: tuple) -> None:
    result, seconds = build
    assert seconds < 300
    assert 8000 <= len(result.cards) <= 12000
    assert result.stats["versions"]["input"] == 27018


def test_pairs_point_at_cards_and_are_safe(build: tuple, raw_facts: tuple) -> None:
    result, _ = build
    nsfw_models, image_rating = raw_facts
    cards = {card.version_id: card for card in result.cards}
    guard = PromptGuard(DEFAULT_NSFW_TERMS)
    for rows in result.pairs.values():
        for row in rows:
            api = row["api"]
            assert api["version_id"] in cards
            assert api["model_id"] not in nsfw_models
            assert image_rating[row["image_id"]] == "None"
            prompt = row["instruction"]["prompt"]
            assert not re.search(r"<\s*(lora|lyco|hypernet)", prompt, re.I)
            assert not guard.is_explicit(prompt)
    T2IApi.model_validate(result.pairs["test"][0]["api"])


def test_splits_disjoint_by_image_and_in_proportion(build: tuple) -> None:
    result, _ = build
    images = {name: {row["image_id"] for row in rows} for name, rows in result.pairs.items()}
    assert not images["train"] & images["val"]
    assert not images["train"] & images["test"]
    assert not images["val"] & images["test"]
    total = sum(len(rows) for rows in result.pairs.values())
    for name, share in (("train", 0.8), ("val", 0.1), ("test", 0.1)):
        assert abs(len(result.pairs[name]) / total - share) <= 0.01
    keys = [
        (r["api"]["version_id"], r["instruction"]["prompt"].lower())
        for rows in result.pairs.values()
        for r in rows
    ]
    assert len(keys) == len(set(keys))


def test_cards_json_round_trip(build: tuple, tmp_path: Path) -> None:
    result, _ = build
    line = json.dumps(result.cards[0].model_dump(mode="json"))
    assert type(result.cards[0]).model_validate_json(line) == result.cards[0]
