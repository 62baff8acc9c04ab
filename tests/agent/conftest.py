"""Fixtures for the agent tests: a small catalog, a lexical fake index, a scripted planner."""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from diffagent.index.cards import CardFile, CardStats, ModelCard, RecommendedParams, write_cards
from diffagent.index.catalog import Catalog


def make_card(
    version_id: int,
    name: str,
    *,
    base: str = "SD 1.5",
    kind: str = "Checkpoint",
    tags: list[str] | None = None,
    triggers: list[str] | None = None,
    description: str = "",
    downloads: int = 1000,
    steps: int = 25,
    cfg: float = 7.0,
    sampler: str = "DPM++ 2M Karras",
    size: tuple[int, int] | None = None,
) -> ModelCard:
    width, height = size or ((1024, 1024) if base == "SDXL 1.0" else (512, 768))
    arch = "sdxl" if base == "SDXL 1.0" else "sd1"
    return ModelCard(
        version_id=version_id,
        model_id=version_id // 10,
        air=f"urn:air:{arch}:{kind.lower()}:civitai:{version_id // 10}@{version_id}",
        name=name,
        version_name="v1",
        type=kind,  # type: ignore[arg-type]
        base_model=base,  # type: ignore[arg-type]
        trigger_words=triggers or [],
        tags=tags or [],
        keywords=[],
        description=description or f"{name}: a {base} {kind.lower()} for {', '.join(tags or [])}.",
        stats=CardStats(downloads=downloads, rating=4.5, rating_count=10),
        file=CardFile(
            name=f"{name.lower().replace(' ', '_')}.safetensors",
            format="SafeTensor",
            sha256=f"{version_id:064X}",
            url=f"https://civitai.com/api/download/models/{version_id}",
        ),
        recommended=RecommendedParams(
            width=width,
            height=height,
            sampling_method=sampler,
            sampling_steps=steps,
            cfg_scale=cfg,
            lora_weight=0.7 if kind == "LORA" else None,
        ),
    )


CARDS = [
    make_card(
        1001,
        "RealVision",
        tags=["photorealistic", "photo", "portrait", "realistic"],
        downloads=90000,
        steps=30,
        cfg=6.0,
    ),
    make_card(
        1002,
        "AnimeMix",
        tags=["anime", "manga", "illustration", "girl"],
        downloads=80000,
        steps=28,
        cfg=8.0,
        sampler="Euler a",
    ),
    make_card(
        1003,
        "PaintDream",
        tags=["painterly", "oil painting", "art", "fantasy", "castle"],
        downloads=50000,
    ),
    make_card(1004, "CyberCity", tags=["cyberpunk", "city", "neon", "night"], downloads=30000),
    make_card(
        2001,
        "XL Photo",
        base="SDXL 1.0",
        tags=["photorealistic", "photo", "realistic"],
        downloads=70000,
        steps=35,
        cfg=5.0,
    ),
    make_card(
        2002,
        "XL Anime",
        base="SDXL 1.0",
        tags=["anime", "illustration"],
        downloads=60000,
        sampler="Euler a",
    ),
    make_card(
        2003,
        "XL Painter",
        base="SDXL 1.0",
        tags=["painterly", "oil painting", "castle"],
        downloads=40000,
    ),
    make_card(
        3001,
        "Ghibli Style",
        kind="LORA",
        tags=["anime", "ghibli", "landscape", "castle"],
        triggers=["ghibli style"],
        downloads=45000,
    ),
    make_card(
        3002,
        "Watercolor LoRA",
        kind="LORA",
        tags=["watercolor", "painterly"],
        triggers=["watercolor"],
        downloads=20000,
    ),
    make_card(
        4001, "XL Detail LoRA", base="SDXL 1.0", kind="LORA", tags=["detail"], downloads=10000
    ),
]


@dataclass
class FakeHit:
    card: ModelCard
    score: float
    lexical_score: float | None = None
    dense_score: float | None = None


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", text.lower()))


@dataclass
class FakeIndex:
    """Lexical stand-in for CatalogIndex: tag/name word overlap, ties broken by downloads."""

    catalog: Catalog

    def _pool(self, base_model: str | None, model_type: str | None) -> list[ModelCard]:
        return [
            c
            for c in self.catalog
            if (base_model is None or c.base_model == base_model)
            and (model_type is None or c.type == model_type)
        ]

    def query(
        self,
        text: str,
        k: int = 10,
        *,
        base_model: str | None = None,
        model_type: str | None = None,
    ) -> list[FakeHit]:
        words = _words(text)
        scored = []
        for card in self._pool(base_model, model_type):
            doc = _words(" ".join([card.name, *card.tags, *card.trigger_words]))
            scored.append(FakeHit(card, len(words & doc) + card.stats.downloads / 1e6))
        return sorted(scored, key=lambda h: -h.score)[:k]

    def nearest_by_name(
        self, name: str, k: int = 5, *, base_model: str | None = None, model_type: str | None = None
    ) -> list[FakeHit]:
        scored = [
            FakeHit(c, difflib.SequenceMatcher(None, name.lower(), c.name.lower()).ratio())
            for c in self._pool(base_model, model_type)
        ]
        return sorted(scored, key=lambda h: -h.score)[:k]


@dataclass
class ScriptedBackend:
    """A PlannerBackend that replies from a script, one entry per call (pydantic-ai style).

    An entry is a string (returned by `complete`), or a callable taking the messages.
    `score_continuations` prefers the continuation naming `prefer` (else the first).
    """

    replies: list[str | Callable[[list[dict[str, str]]], str]] = field(default_factory=list)
    prefer: list[str] = field(default_factory=list)
    name: str = "scripted"
    calls: list[list[dict[str, str]]] = field(default_factory=list)

    def complete(
        self,
        messages: list[dict[str, str]],
        *,
        json_schema: dict | None = None,
        max_new_tokens: int = 256,
    ) -> str:
        self.calls.append(messages)
        if not self.replies:
            raise AssertionError("the scripted planner ran out of replies")
        reply = self.replies.pop(0)
        return reply(messages) if callable(reply) else reply

    def score_continuations(
        self, messages: list[dict[str, str]], continuations: list[str]
    ) -> list[float]:
        self.calls.append(messages)
        wanted = self.prefer.pop(0) if self.prefer else None
        return [
            0.0 if wanted and wanted.lower() in text.lower() else -1.0 - 0.01 * i
            for i, text in enumerate(continuations)
        ]


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    write_cards(CARDS, tmp_path / "catalog" / "cards.jsonl")
    return Catalog.load(tmp_path / "catalog")


@pytest.fixture
def index(catalog: Catalog) -> FakeIndex:
    return FakeIndex(catalog)


def api_json(**fields: Any) -> str:
    return json.dumps(fields)
