"""Fixtures for the agent tests: a small catalog, a lexical fake index, a scripted planner."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from diffagent.cards import write_cards
from diffagent.index.catalog import Catalog

from ..fakes import FakeHit, FakeIndex, make_card

__all__ = ["CARDS", "FakeHit", "FakeIndex", "ScriptedBackend", "api_json", "make_card"]


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
