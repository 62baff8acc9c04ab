"""A scripted 5-turn conversation: every refinement honoured, everything else kept."""

from __future__ import annotations

from pathlib import Path

import pytest

from diffagent.agent.service import DiffAgent

from ..fakes import settings_for
from .conftest import ScriptedBackend, api_json


def make_agent(tmp_path: Path, index, backend, **config) -> DiffAgent:
    cfg = settings_for(checkpoint_db=tmp_path / "conv.sqlite", **config)
    return DiffAgent.create(cfg, backend=backend, index=index)


def test_five_turn_refinement_conversation(tmp_path: Path, index) -> None:
    backend = ScriptedBackend(
        replies=[
            # turn 1: the planner picks the painterly SD 1.5 checkpoint
            api_json(
                model="PaintDream",
                type="Checkpoint",
                base_model="SD 1.5",
                width=512,
                height=768,
                sampling_method="DPM++ 2M Karras",
                sampling_steps=30,
                cfg_scale=7,
            ),
            # turn 3 (SDXL only): an SDXL painter
            api_json(
                model="XL Painter",
                type="Checkpoint",
                base_model="SDXL 1.0",
                width=1024,
                height=1024,
                sampling_method="DPM++ 2M Karras",
                sampling_steps=30,
                cfg_scale=7,
            ),
            # turn 5 (anime): the planner wrongly proposes an SD 1.5 model
            api_json(
                model="AnimeMix",
                type="Checkpoint",
                base_model="SD 1.5",
                width=512,
                height=512,
                sampling_method="Euler a",
                sampling_steps=28,
                cfg_scale=8,
            ),
        ]
    )
    agent = make_agent(tmp_path, index, backend, mode="generate")
    sid = agent.new_session()

    t1 = agent.reply(sid, "a castle on a hill at sunset, oil painting")
    assert t1.api is not None and t1.api.model == "PaintDream" and t1.card is not None
    assert (t1.api.width, t1.api.height, t1.api.sampling_steps) == (512, 768, 30)
    assert "PaintDream" in t1.reply and t1.why

    t2 = agent.reply(sid, "square")
    assert t2.api is not None and t2.api.version_id == t1.api.version_id  # model kept
    assert t2.api.width == t2.api.height == 512
    assert t2.api.sampling_steps == 30 and t2.api.prompt == t1.api.prompt

    t3 = agent.reply(sid, "SDXL only")
    assert t3.api is not None and t3.api.base_model == "SDXL 1.0" and t3.api.model == "XL Painter"
    assert t3.api.width == t3.api.height == 1024  # still square, at SDXL's size

    t4 = agent.reply(sid, "faster")
    assert t4.api is not None and t4.api.version_id == t3.api.version_id
    assert t4.api.sampling_steps < t3.api.sampling_steps
    assert (t4.api.width, t4.api.height, t4.api.base_model) == (1024, 1024, "SDXL 1.0")

    t5 = agent.reply(sid, "make it anime")
    api = t5.api
    assert api is not None and api.base_model == "SDXL 1.0"  # repaired: SDXL was asked for
    assert api.model == "XL Anime" and t5.repairs
    assert "anime" in api.prompt and "castle" in api.prompt
    assert api.width == api.height == 1024 and api.sampling_steps == t4.api.sampling_steps

    assert backend.replies == []  # the planner ran on turns 1, 3 and 5 only
    history = agent.history(sid)
    assert [m["role"] for m in history] == ["user", "assistant"] * 5
    assert history[8]["content"] == "make it anime"


def test_another_model_and_no_lora(tmp_path: Path, index) -> None:
    agent = make_agent(tmp_path, index, None, mode="retrieval")
    sid = agent.new_session()
    first = agent.reply(sid, "ghibli style castle in the clouds")
    assert first.api is not None and first.api.type == "LORA"
    assert first.api.checkpoint is not None
    other = agent.reply(sid, "another model")
    assert other.api is not None and other.api.version_id != first.api.version_id
    plain = agent.reply(sid, "no LoRA")
    assert plain.api is not None and plain.api.type == "Checkpoint" and plain.api.loras == []
    again = agent.reply(sid, "portrait")
    assert again.api is not None and again.api.version_id == plain.api.version_id
    assert again.api.height > again.api.width and again.api.loras == []


def test_a_new_process_continues_the_session(tmp_path: Path, index) -> None:
    first = make_agent(tmp_path, index, None, mode="retrieval")
    sid = first.new_session()
    first.reply(sid, "a neon cyberpunk city at night")
    first.reply(sid, "square")
    first.close()

    second = make_agent(tmp_path, index, None, mode="retrieval")
    turn = second.reply(sid, "faster")
    assert turn.api is not None and turn.api.model == "CyberCity"
    assert turn.api.width == turn.api.height  # "square" from the first process is kept
    assert len(second.history(sid)) == 6


def test_a_base_model_the_catalog_lacks_is_refused_and_the_pick_kept(tmp_path: Path) -> None:
    from diffagent.index.catalog import Catalog

    from .conftest import CARDS, FakeIndex

    sd15 = Catalog(directory=tmp_path)
    for card in CARDS:
        if card.base_model == "SD 1.5":
            sd15.add(card)
    agent = make_agent(tmp_path, FakeIndex(sd15), None, mode="retrieval")
    sid = agent.new_session()
    first = agent.reply(sid, "a neon cyberpunk city at night")
    refused = agent.reply(sid, "SDXL only")
    assert "no SDXL 1.0 model" in refused.reply
    assert refused.api is not None and refused.api.version_id == first.api.version_id
    after = agent.reply(sid, "square")
    assert after.api is not None and after.api.width == after.api.height


@pytest.mark.slow
def test_five_turns_with_the_embedded_planner_on_the_starter_catalog(tmp_path: Path) -> None:
    agent = DiffAgent.create(settings_for(checkpoint_db=tmp_path / "conv.sqlite"))
    sid = agent.new_session()
    first = agent.reply(sid, "a cozy cabin in a snowy forest at dusk, oil painting")
    square = agent.reply(sid, "square")
    faster = agent.reply(sid, "faster")
    anime = agent.reply(sid, "make it anime")
    plain = agent.reply(sid, "no LoRA")
    assert first.api and square.api and faster.api and anime.api and plain.api
    assert square.api.version_id == first.api.version_id and square.api.width == square.api.height
    assert faster.api.version_id == first.api.version_id
    assert faster.api.sampling_steps < square.api.sampling_steps
    assert faster.api.width == faster.api.height
    assert "anime" in anime.api.prompt and anime.api.width == anime.api.height
    assert plain.api.type == "Checkpoint" and plain.api.loras == []
    assert plain.api.sampling_steps == faster.api.sampling_steps
    assert len(agent.history(sid)) == 10
