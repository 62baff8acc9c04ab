"""Understanding messages: new prompts, refinements, questions, NSFW, bad input."""

from __future__ import annotations

import pytest

from diffagent.agent.understand import MAX_PROMPT_CHARS, Constraints, target_size, understand

LAST = {
    "model": "RealVision",
    "version_id": 1001,
    "type": "Checkpoint",
    "base_model": "SD 1.5",
    "sampling_steps": 30,
    "width": 512,
    "height": 768,
}


def first(message: str) -> Constraints:
    result = understand(message)
    assert result.intent == "image" and result.replan
    return result.constraints


def test_first_message_is_the_prompt_and_keeps_content_words() -> None:
    cons = first("a portrait of an old fisherman, mountain landscape behind him")
    assert cons.prompt.startswith("a portrait of an old fisherman")
    assert cons.aspect is None  # "portrait"/"landscape" here are content, not format


def test_explicit_constraints_in_the_first_message() -> None:
    cons = first("a red fox in the snow, SDXL, square, 20 steps, cfg 5.5, DPM++ 2M Karras")
    assert cons.base_model == "SDXL 1.0"
    assert cons.aspect == "square"
    assert (cons.steps, cons.cfg_scale, cons.sampler) == (20, 5.5, "DPM++ 2M Karras")
    assert target_size(cons, "SDXL 1.0") == (1024, 1024)


@pytest.mark.parametrize(
    ("message", "check", "replan"),
    [
        ("make it anime", lambda c: c.styles == ["anime"], True),
        ("SDXL only", lambda c: c.base_model == "SDXL 1.0", True),
        ("square", lambda c: c.aspect == "square", False),
        ("landscape please", lambda c: c.aspect == "landscape", False),
        ("faster", lambda c: c.steps == 18, False),
        ("another model", lambda c: c.exclude_version_ids == [1001], True),
        ("no LoRA", lambda c: c.no_lora and c.model_type == "Checkpoint", False),
        ("more painterly", lambda c: "painterly" in c.styles, True),
        ("use 40 steps", lambda c: c.steps == 40, False),
        ("768x512", lambda c: (c.width, c.height) == (768, 512), False),
        ("without people", lambda c: "people" in c.negative_prompt, False),
        ("bigger", lambda c: (c.width, c.height) == (768, 1152), False),
        ("smaller please", lambda c: (c.width, c.height) == (320, 512), False),
    ],
)
def test_refinements_change_only_what_they_name(message, check, replan) -> None:
    before = Constraints(prompt="a castle on a hill", styles=["photorealistic"])
    result = understand(message, before, current_api=LAST)
    assert result.intent == "image"
    assert check(result.constraints), result.constraints
    assert result.constraints.prompt == "a castle on a hill"
    assert result.replan is replan, result.changes


def test_media_styles_replace_each_other_and_other_styles_add_up() -> None:
    cons = Constraints(prompt="a cat", styles=["photorealistic", "cinematic"])
    cons = understand("make it anime", cons, current_api=LAST).constraints
    assert cons.styles == ["cinematic", "anime"]
    cons = understand("more painterly", cons, current_api=LAST).constraints
    assert cons.styles == ["cinematic", "anime", "painterly"]
    assert "anime" in cons.query and "a cat" in cons.query


def test_no_lora_replans_only_when_the_current_card_is_a_lora() -> None:
    cons = Constraints(prompt="a castle")
    assert understand("no LoRA", cons, current_api={**LAST, "type": "LORA"}).replan
    assert not understand("no LoRA", cons, current_api=LAST).replan


def test_new_description_replaces_prompt_and_keeps_hard_constraints() -> None:
    cons = Constraints(prompt="a castle", base_model="SDXL 1.0", styles=["anime"], no_lora=True)
    result = understand(
        "a lighthouse in a storm at night, dramatic waves crashing", cons, current_api=LAST
    )
    assert result.replan and result.constraints.prompt.startswith("a lighthouse")
    assert result.constraints.base_model == "SDXL 1.0" and result.constraints.no_lora
    assert result.constraints.styles == []


@pytest.mark.parametrize("question", ["what is CFG?", "How do samplers work?", "explain LoRA"])
def test_questions_ask_for_no_image(question: str) -> None:
    assert understand(question).intent == "question"


@pytest.mark.parametrize(
    "ask", ["which model is best for anime portraits?", "can you make it anime?", "draw a cat?"]
)
def test_requests_phrased_as_questions_are_image_requests(ask: str) -> None:
    previous = Constraints(prompt="a cat")
    assert understand(ask, previous, current_api=LAST).intent == "image"


@pytest.mark.parametrize("message", ["a nude woman on a beach", "NSFW anime girl"])
def test_nsfw_is_detected(message: str) -> None:
    assert understand(message).intent == "nsfw"


@pytest.mark.parametrize("message", ["", "   \n\t "])
def test_empty_message(message: str) -> None:
    assert understand(message).intent == "empty"


def test_huge_message_is_cut_with_a_note() -> None:
    result = understand("a tall tree " + "x" * 99_988)
    assert result.intent == "image"
    assert len(result.constraints.prompt) <= MAX_PROMPT_CHARS
    assert result.notes and "100,000" in result.notes[0]
