"""Issue 10 on tiny real weights: two composed LoRAs change the image; the critique loop retries.

The tiny SD 1.5 checkpoint and two tiny LoRAs are real safetensors files loaded by diffusers
(`load_lora_weights` + `set_adapters`); the critique loop runs on a scripted scorer and a scripted
clock so best-of-n, the time budget and persistence across a restart are exact.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from diffagent.agent.service import DiffAgent
from diffagent.api import LoraRef
from diffagent.cards import ModelCard, read_cards, write_cards
from diffagent.index.catalog import Catalog
from diffagent.tools.generate import GenerationConfig
from diffagent.tools.store import sha256_file
from diffagent.tools.testing.tiny import make_tiny_weights, write_tiny_lora

from ..fakes import FakeIndex, settings_for


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny models gain nothing from threads; on busy cores OpenMP spinning costs 10x."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model store: the tiny SD 1.5 checkpoint, a watercolor style LoRA and a lighthouse LoRA."""
    root = tmp_path_factory.mktemp("tiny10")
    paths = make_tiny_weights(root)
    write_tiny_lora("sd15", paths["sd15_config"], root / "tiny-sd15-lighthouse.safetensors", 1)
    cards = {card.version_id: card for card in read_cards(paths["cards"])}
    checkpoint, lora = cards[990_001], cards[990_002]
    style = lora.model_copy(
        update={"name": "Tiny Watercolor", "tags": ["watercolor", "style", "painting"]}
    )
    style.recommended.lora_weight = 0.9
    extra = root / "tiny-sd15-lighthouse.safetensors"
    subject = lora.model_copy(
        update={
            "version_id": 990_003,
            "model_id": 990_003,
            "name": "Tiny Lighthouse",
            "tags": ["lighthouse", "coast"],
            "trigger_words": ["lghths"],
            "file": lora.file.model_copy(
                update={"name": extra.name, "sha256": sha256_file(extra).upper()}
            ),
        },
        deep=True,
    )
    subject.recommended.lora_weight = 0.6
    base = checkpoint.model_copy(update={"name": "Tiny Base", "tags": ["general"]}, deep=True)
    base.stats.downloads = 10
    write_cards([base, style, subject], root / "cards.jsonl")
    return root


def _agent(store: Path, tmp_path: Path, **values: Any) -> DiffAgent:
    settings = settings_for(
        catalog_dir=store,
        mode="retrieval",
        checkpoint_db=tmp_path / "conversations.sqlite",
        generation=GenerationConfig(model_store=store, device="cpu"),
        seeds=1,
        seed=3,
        output_dir=tmp_path / "images",
        **values,
    )
    return DiffAgent.create(settings, index=FakeIndex(Catalog.load(store)))


def _pixels(paths: list[str]) -> np.ndarray:
    from PIL import Image

    with Image.open(paths[0]) as image:
        return np.asarray(image.convert("RGB"), dtype=np.float32)


def test_two_composed_loras_each_change_the_image_and_every_export_lists_both(
    store: Path, tmp_path: Path
) -> None:
    agent = _agent(store, tmp_path)
    turn = agent.reply(agent.new_session(), "a lighthouse on a cliff, watercolor")

    assert turn.api is not None and turn.images
    assert sorted(lo.name for lo in turn.api.loras) == ["Tiny Lighthouse", "Tiny Watercolor"]
    weights = {lo.name: lo.weight for lo in turn.api.loras}
    assert weights == {"Tiny Watercolor": 0.9, "Tiny Lighthouse": 0.6}  # the cards' evidence
    assert {item["concept"] for item in turn.composition} >= {"a lighthouse on a cliff"}
    assert "Composition:" in turn.reply and "Tiny Lighthouse at 0.6" in turn.reply
    assert turn.api.prompt.startswith("lghths, ")  # the composed LoRA's trigger word

    a1111 = json.loads(turn.exports["a1111"])
    assert "<lora:tiny-sd15-lora:0.9>" in a1111["prompt"]
    assert "<lora:tiny-sd15-lighthouse:0.6>" in a1111["prompt"]
    comfy = json.loads(turn.exports["comfyui"])
    loaders = {k: v for k, v in comfy.items() if v["class_type"] == "LoraLoader"}
    assert sorted(v["inputs"]["lora_name"] for v in loaders.values()) == [
        "tiny-sd15-lighthouse.safetensors",
        "tiny-sd15-lora.safetensors",
    ]
    first, second = sorted(loaders)
    assert loaders[second]["inputs"]["model"] == [first, 0]  # chained
    assert comfy["6"]["inputs"]["model"] == [second, 0]
    code = turn.exports["diffusers"]
    assert code.count("pipe.load_lora_weights(") == 2
    assert "pipe.set_adapters(['lora0', 'lora1'], adapter_weights=[" in code
    assert "0.9" in code and "0.6" in code

    # Each LoRA and each weight changes the output (same seed, same everything else).
    ctx = agent.context
    assert ctx.generator is not None
    checkpoint = ctx.catalog.get(990_001)
    cards = [c for lo in turn.api.loras if (c := ctx.catalog.get(lo.version_id)) is not None]
    assert checkpoint is not None

    def render(loras: list[LoraRef]) -> np.ndarray:
        api = turn.api.model_copy(update={"loras": loras})  # type: ignore[union-attr]
        image = ctx.generator.generate(api, [3], checkpoint, cards)[0]  # type: ignore[union-attr]
        return np.asarray(image.convert("RGB"), dtype=np.float32)

    both = render(list(turn.api.loras))
    np.testing.assert_allclose(both, _pixels(turn.images), atol=2.0)  # the turn's own image
    variants = {
        "none": render([]),
        "first only": render(turn.api.loras[:1]),
        "second only": render(turn.api.loras[1:]),
        "first weight x2": render(
            [turn.api.loras[0].model_copy(update={"weight": 1.8}), turn.api.loras[1]]
        ),
        "second weight 0.2": render(
            [turn.api.loras[0], turn.api.loras[1].model_copy(update={"weight": 0.2})]
        ),
    }
    for name, image in variants.items():
        assert np.abs(image - both).mean() > 0.5, name
    agent.close()


class ScriptedScorer:
    """Scores by card (from the API in the cache key) and moves a scripted clock 10 s a call."""

    def __init__(self, scores: dict[int, float], clock: list[float]) -> None:
        self.scores = scores
        self.clock = clock
        self.calls: list[int] = []

    def score(self, prompt: str, images: list[Any], **kwargs: Any) -> dict[str, Any]:
        version_id = json.loads(kwargs["api_key"])["version_id"]
        self.calls.append(version_id)
        self.clock[0] += 10.0
        value = self.scores[version_id]
        seeds = kwargs["seeds"]
        return {
            "unified": value,
            "per_image": [{"seed": seed, "unified": value} for seed in seeds],
        }


@pytest.fixture
def checkpoints(store: Path, tmp_path: Path) -> Path:
    """A catalog of three checkpoint cards on the tiny weights (A ranks first, then B, C)."""
    base = next(c for c in read_cards(store / "cards.jsonl") if c.type == "Checkpoint")
    cards: list[ModelCard] = []
    for offset, (name, downloads) in enumerate((("A", 30), ("B", 20), ("C", 10))):
        card = base.model_copy(
            update={"version_id": 880_001 + offset, "model_id": 880_001 + offset},
            deep=True,
        )
        card.name, card.tags = f"Tiny Lighthouse {name}", ["lighthouse"]
        card.stats.downloads = downloads
        cards.append(card)
    folder = tmp_path / "catalog"
    write_cards(cards, folder / "cards.jsonl")
    return folder


def _critique_agent(
    store: Path, catalog: Path, tmp_path: Path, scorer: ScriptedScorer, **critique: Any
) -> DiffAgent:
    overrides = {f"critique.{key}": value for key, value in critique.items()}
    agent = _agent(store, tmp_path, **overrides)
    agent.context.catalog = Catalog.load(catalog)
    agent.context.index = FakeIndex(agent.context.catalog)
    agent.context.scorer = scorer
    return agent


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [0.0]
    monkeypatch.setattr("diffagent.agent.critique.monotonic", lambda: now[0])
    return now


def test_below_the_score_the_next_cards_are_tried_the_best_kept_and_persisted(
    store: Path, checkpoints: Path, tmp_path: Path, clock: list[float]
) -> None:
    scorer = ScriptedScorer({880_001: 0.2, 880_002: 0.7, 880_003: 0.5}, clock)
    agent = _critique_agent(store, checkpoints, tmp_path, scorer, min_score=0.6)
    session = agent.new_session()

    turn = agent.reply(session, "a lighthouse at dusk")

    assert scorer.calls == [880_001, 880_002, 880_003]
    assert [a["version_id"] for a in turn.attempts] == [880_001, 880_002, 880_003]
    assert [a["kept"] for a in turn.attempts] == [False, True, False]
    assert turn.api is not None and turn.api.version_id == 880_002  # best of n
    assert turn.images == turn.attempts[1]["images"] and turn.scores == {
        "unified": 0.7,
        "per_image": [{"seed": 3, "unified": 0.7}],
    }
    assert all(Path(p).is_file() for a in turn.attempts for p in a["thumbnails"])
    assert "| 2 (kept) | Tiny Lighthouse B |" in turn.reply and "0.700" in turn.reply
    agent.close()

    # A new process on the same database: the attempts and the kept model are still there.
    again = _critique_agent(store, checkpoints, tmp_path, scorer, min_score=0.6)
    attempts = again.attempts(session)
    assert [(a["version_id"], a["unified"], a["kept"]) for a in attempts] == [
        (880_001, 0.2, False),
        (880_002, 0.7, True),
        (880_003, 0.5, False),
    ]
    scorer.scores = dict.fromkeys(scorer.scores, 0.9)  # good enough now: no retries
    seed = again.reply(session, "seed 9")
    assert seed.api is not None and seed.api.version_id == 880_002 and seed.api.seed == 9
    assert len(seed.attempts) == 1 and len(again.attempts(session)) == 4
    again.close()


def test_retries_stop_at_the_time_budget(
    store: Path, checkpoints: Path, tmp_path: Path, clock: list[float]
) -> None:
    scorer = ScriptedScorer({880_001: 0.1, 880_002: 0.2, 880_003: 0.9}, clock)
    agent = _critique_agent(store, checkpoints, tmp_path, scorer, min_score=0.6, time_budget_s=15)

    turn = agent.reply(agent.new_session(), "a lighthouse at dusk")

    # Each retry costs 10 scripted seconds: a second one would end past the 15 s budget.
    assert [a["version_id"] for a in turn.attempts] == [880_001, 880_002]
    assert turn.api is not None and turn.api.version_id == 880_002
    assert "time budget" in turn.reply
    agent.close()


def test_try_a_few_models_compares_without_a_threshold(
    store: Path, checkpoints: Path, tmp_path: Path, clock: list[float]
) -> None:
    scorer = ScriptedScorer({880_001: 0.8, 880_002: 0.3, 880_003: 0.85}, clock)
    agent = _critique_agent(store, checkpoints, tmp_path, scorer, max_attempts=2)
    session = agent.new_session()
    first = agent.reply(session, "a lighthouse at dusk")
    assert len(first.attempts) == 1 and scorer.calls == [880_001]  # no threshold: no retry

    turn = agent.reply(session, "try a few models")

    assert [a["version_id"] for a in turn.attempts] == [880_001, 880_002]  # max_attempts 2
    assert turn.api is not None and turn.api.version_id == 880_001
    assert "try a few models" in turn.changes and "Tried:" in turn.reply
    agent.close()
