"""Fixtures of the training tests: a small catalog with pairs and a tiny random planner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from diffagent.cards import write_cards
from diffagent.finetune.data import Pair
from diffagent.finetune.tiny import make_tiny_planner
from diffagent.index.catalog import Catalog

from ..fakes import make_card

CARDS = [
    make_card(1001, "RealVision", tags=["photorealistic", "photo", "portrait"]),
    make_card(1002, "RealVision Lite", tags=["photorealistic", "photo"]),
    make_card(1101, "AnimeMix", tags=["anime", "illustration"], sampler="Euler a"),
    make_card(1201, "PaintDream", tags=["painterly", "oil painting", "castle"]),
    make_card(1301, "CyberCity", tags=["cyberpunk", "city", "neon"]),
    make_card(
        1401, "Ghibli Style", kind="LORA", tags=["anime", "ghibli"], triggers=["ghibli style"]
    ),
    make_card(2001, "XL Photo", base="SDXL 1.0", tags=["photorealistic", "photo"]),
]
PROMPTS = {
    1001: "portrait photo of an old fisherman, 85mm, natural light",
    1101: "1girl, anime, school uniform, cherry blossoms",
    1201: "a castle on a hill, oil painting, dramatic sky",
    1301: "neon city street at night, rain, cyberpunk",
    1401: "ghibli style, a quiet village by the sea",
    2001: "photo of a red sports car, studio lighting",
}


def _pair_row(n: int, version_id: int, prompt: str) -> dict[str, object]:
    return {
        "id": f"{version_id}-{n}",
        "image_id": n,
        "instruction": {"prompt": prompt, "negative_prompt": "blurry"},
        "api": {
            "version_id": version_id,
            "width": 512,
            "height": 768,
            "sampling_method": "Euler a",
            "sampling_steps": 24,
            "cfg_scale": 6.5,
        },
    }


@pytest.fixture(scope="session")
def catalog_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A catalog folder: the cards and train/val/test pairs (the test split is a trap)."""
    folder = tmp_path_factory.mktemp("train-catalog")
    write_cards(CARDS, folder / "cards.jsonl")
    (folder / "pairs").mkdir()
    rows = [_pair_row(n, v, p) for n, (v, p) in enumerate(PROMPTS.items())]
    for split, chosen in (("train", rows), ("val", rows[:3]), ("test", rows[3:])):
        with (folder / "pairs" / f"{split}.jsonl").open("w", encoding="utf-8") as handle:
            for row in chosen:
                handle.write(json.dumps(row) + "\n")
    # Evidence: each pair's own image (id n) and a second sample prompt (id 100 + n).
    with (folder / "evidence.jsonl").open("w", encoding="utf-8") as handle:
        for n, (version_id, prompt) in enumerate(PROMPTS.items()):
            prompts = [[n, prompt], [100 + n, prompt.split(",")[0] + ", masterpiece"]]
            handle.write(json.dumps({"version_id": version_id, "prompts": prompts}) + "\n")
    return folder


@pytest.fixture(scope="session")
def catalog(catalog_dir: Path) -> Catalog:
    return Catalog.load(catalog_dir)


@pytest.fixture(scope="session")
def tiny_planner(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer random Llama with SmolLM2's tokenizer, built offline."""
    return make_tiny_planner(tmp_path_factory.mktemp("tiny-planner"))


def pair_of(version_id: int) -> Pair:
    return Pair(
        prompt=PROMPTS[version_id],
        negative_prompt="blurry",
        version_id=version_id,
        image_id=list(PROMPTS).index(version_id),
        api={"version_id": version_id},
    )


def ranked_by_list(catalog: Catalog, order: list[int]):  # noqa: ANN201
    """A fake ranker: the same card order for every prompt, truth first."""

    def source(pair: Pair) -> list:
        ids = [pair.version_id, *[v for v in order if v != pair.version_id]]
        return [card for v in ids if (card := catalog.get(v)) is not None]

    return source
