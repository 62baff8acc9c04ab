"""The Chainlit app: its handlers driven inside a Chainlit HTTP context with a real Message."""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture
def app_module(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    # Chainlit writes its config folder under CHAINLIT_APP_ROOT when first imported.
    monkeypatch.setenv("CHAINLIT_APP_ROOT", str(tmp_path))
    module = importlib.import_module("diffagent.ui.chainlit_app")
    yield module
    module.set_agent(None)


def test_each_chat_has_its_own_session_and_shows_the_turn(
    app_module: Any, agent_factory: Callable[[], Any], tmp_path: Path
) -> None:
    import chainlit as cl
    from chainlit.context import init_http_context

    agent = agent_factory()
    app_module.set_agent(agent)
    image = tmp_path / "image.png"
    image.write_bytes(b"\x89PNG fake")

    async def chat(messages: list[str]) -> tuple[str, list[Any]]:
        init_http_context()  # one chat = one Chainlit session
        await app_module.on_chat_start()
        answers = [await app_module.on_message(cl.Message(content=text)) for text in messages]
        return cl.user_session.get(app_module.SESSION_KEY), answers

    first_id, first = asyncio.run(chat(["a cat astronaut, 3d render", "make it square"]))
    second_id, _ = asyncio.run(chat(["a watercolor forest"]))
    assert first_id != second_id
    users = [m["content"] for m in agent.history(first_id) if m["role"] == "user"]
    assert users == ["a cat astronaut, 3d render", "make it square"]
    assert [m["content"] for m in agent.history(second_id) if m["role"] == "user"] == [
        "a watercolor forest"
    ]
    answer = first[-1]
    names = {element.name for element in answer.elements}
    assert {"workflow.json", "txt2img.json", "generate.py"} <= names  # downloadable exports
    assert agent.history(first_id)[-1]["content"] in answer.content  # the agent's reply, once
    assert "modelVersionId=" in answer.content and "| size |" in answer.content


def test_render_turn_shows_card_repairs_scores_and_images(app_module: Any, tmp_path: Path) -> None:
    from chainlit.context import init_http_context

    from diffagent.agent.respond import compose_reply
    from diffagent.agent.service import TurnResult
    from diffagent.agent.state import State
    from diffagent.cards import ModelCard

    from ..fakes import make_card

    image = tmp_path / "seed0.png"
    image.write_bytes(b"\x89PNG fake")
    card: ModelCard = make_card(128713, "Dream", triggers=["dreamy"])
    api = {
        "model": "Dream",
        "type": "Checkpoint",
        "base_model": "SD 1.5",
        "version_id": 128713,
        "width": 512,
        "height": 512,
        "sampling_method": "Euler a",
        "sampling_steps": 20,
        "cfg_scale": 7.0,
        "prompt": "dreamy, a castle",
    }
    repairs = [{"field": "model", "before": "Dreem", "after": "Dream", "reason": "misspelled"}]
    state = State(
        api=api,
        why="its trigger words match",
        repairs=repairs,
        scores={"unified": 0.61234},
        images=[str(image)],
    )
    turn = TurnResult(
        session_id="s",
        reply=compose_reply(state),
        api=api,
        card=card,
        why=state.why,
        repairs=repairs,
        images=[str(image)],
        scores=state.scores,
        exports={"a1111": "{}"},
    )

    async def render() -> tuple[str, list[Any]]:
        init_http_context()  # elements belong to a chat thread
        return app_module.render_turn(turn)

    content, elements = asyncio.run(render())
    assert "its trigger words match" in content
    assert "model: Dreem -> Dream (misspelled)" in content and "0.612" in content
    assert content.count("Dreem") == 1  # repairs are rendered once, by the agent
    assert "modelVersionId=128713" in content and "`dreamy`" in content
    by_name = {element.name: element for element in elements}
    assert by_name["image 1"].path == str(image)
    assert by_name["txt2img.json"].content == b"{}"
    assert "DIFFAGENT_GENERATION__MODEL_STORE" not in content  # images were made


def test_empty_message_gets_a_hint(app_module: Any, agent_factory: Callable[[], Any]) -> None:
    import chainlit as cl
    from chainlit.context import init_http_context

    app_module.set_agent(agent_factory())

    async def run() -> Any:
        init_http_context()
        await app_module.on_chat_start()
        return await app_module.on_message(cl.Message(content="   "))

    assert "describe the image" in asyncio.run(run()).content


def test_settings_become_the_refinement_a_user_would_type() -> None:
    from diffagent.agent.understand import Constraints, understand
    from diffagent.ui.chainlit_settings import DEFAULTS, refinement_text

    changed = {
        **DEFAULTS,
        "base_model": "SDXL 1.0",
        "model_type": "checkpoint only",
        "aspect": "square",
        "steps": 40,
        "seed": "42",
    }
    text = refinement_text(DEFAULTS, changed)
    assert text == "now SDXL only, no LoRA, make it square, 40 steps, seed 42"
    assert refinement_text(changed, changed) == ""
    previous = Constraints(prompt="a corgi, pixel art")
    merged = understand(text, previous, current_api={"version_id": 1, "type": "LORA"})
    cons = merged.constraints
    assert cons.prompt == "a corgi, pixel art"  # a refinement, not a new description
    assert (cons.base_model, cons.no_lora, cons.aspect, cons.steps, cons.seed) == (
        "SDXL 1.0",
        True,
        "square",
        40,
        42,
    )


def test_turn_streams_each_step_with_its_time(agent_factory: Callable[[], Any]) -> None:
    agent = agent_factory()
    session = agent.new_session()
    events: list[tuple[str, float | None]] = []
    result = agent.reply(
        session, "a cat astronaut, 3d render", on_step=lambda n, s, u: events.append((n, s))
    )
    ended = [name for name, seconds in events if seconds is not None]
    assert ended[:4] == ["understand", "retrieve", "plan", "validate"] and ended[-1] == "respond"
    assert [name for name, seconds in events if seconds is None] == ended
    assert result.api is not None and result.alternatives
    assert result.api.version_id not in {card.version_id for card in result.alternatives}
