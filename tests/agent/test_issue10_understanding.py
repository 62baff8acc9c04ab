"""Issue 10: messages that follow the style (media rewrites, settings-only turns, picks)."""

from __future__ import annotations

import pytest

from diffagent.agent.understand import Constraints, understand
from diffagent.agent.understand_style import drop_media

LAST = {"model": "X", "version_id": 1001, "type": "LORA", "base_model": "SD 1.5"}
CORGI = Constraints(prompt="a cute happy corgi, pixel art")


@pytest.mark.parametrize(
    ("message", "field", "value"),
    [
        ("seed 42", "seed", 42),
        ("40 steps", "steps", 40),
        ("set the seed to 99", "seed", 99),
        ("cfg 5", "cfg_scale", 5.0),
        ("Euler a", "sampler", "Euler a"),
        ("768x512", "width", 768),
        ("use DPM++ 2M Karras with cfg 6", "cfg_scale", 6.0),
    ],
)
def test_parameter_only_messages_keep_prompt_and_model(message, field, value) -> None:
    result = understand(message, CORGI, current_api=LAST)
    assert result.constraints.prompt == CORGI.prompt
    assert getattr(result.constraints, field) == value
    assert not result.replan and "new prompt" not in result.changes


def test_settings_on_their_own_are_not_a_prompt() -> None:
    sdxl = understand("SDXL only", CORGI, current_api=LAST)
    assert sdxl.constraints.prompt == CORGI.prompt and sdxl.constraints.base_model == "SDXL 1.0"
    anybase = understand("any base model", sdxl.constraints, current_api=LAST)
    assert anybase.constraints.prompt == CORGI.prompt and anybase.constraints.base_model is None
    again = understand("any base model", anybase.constraints, current_api=LAST)
    assert again.constraints.prompt == CORGI.prompt and "nothing changed" in again.notes[0]
    before = understand("SDXL only")  # before any description: noted, and asked for one
    assert before.intent == "empty" and before.constraints.base_model == "SDXL 1.0"


@pytest.mark.parametrize(
    ("prompt", "message", "kept", "gone"),
    [
        ("a cozy cabin in snowy mountains at dusk, oil painting", "make it anime", "cabin", "oil"),
        ("a watercolor fox in a forest", "make it photorealistic", "a fox in a forest", "water"),
        ("a photo of an old lighthouse", "make it a watercolor", "an old lighthouse", "photo"),
        ("an anime girl with silver hair", "make it realistic", "girl with silver", "anime"),
    ],
)
def test_a_new_medium_rewrites_the_prompt(prompt, message, kept, gone) -> None:
    result = understand(message, Constraints(prompt=prompt), current_api=LAST)
    assert result.replan
    query = result.constraints.query
    assert kept in query and gone not in query.lower()


def test_drop_media_keeps_content_and_the_asked_medium() -> None:
    assert drop_media("a photo of a cat, anime style", keep="anime") == "a cat, anime style"
    assert drop_media("pixel art corgi, 3d render", keep="pixel art") == "pixel art corgi"


def test_pick_by_version_id_or_name() -> None:
    by_id = understand("use version 5581", CORGI, current_api=LAST)
    assert by_id.constraints.pin_version_id == 5581 and by_id.replan
    assert by_id.constraints.prompt == CORGI.prompt
    names = {"anythingelse v4": 5581}
    by_name = understand(
        "use AnythingElse V4", CORGI, current_api=LAST, resolve_name=lambda n: names.get(n.lower())
    )
    assert by_name.constraints.pin_version_id == 5581
    unknown = understand("use warmer colors", CORGI, current_api=LAST, resolve_name=names.get)
    assert (
        unknown.constraints.pin_version_id is None and "warmer colors" in unknown.constraints.prompt
    )
    assert understand("use a LoRA", CORGI, current_api=LAST).constraints.pin_version_id is None
    moved = understand("another model", by_id.constraints, current_api={**LAST, "version_id": 5581})
    assert (
        moved.constraints.pin_version_id is None and 5581 in moved.constraints.exclude_version_ids
    )
