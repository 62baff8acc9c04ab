"""Validation and repair: every field checked against the catalog; the result is always valid."""

from __future__ import annotations

import pytest

from diffagent.agent.card_api import card_api
from diffagent.agent.understand import Constraints
from diffagent.agent.validate import validate_and_repair
from diffagent.api import T2IApi

GOOD = {
    "model": "AnimeMix",
    "version_id": 1002,
    "type": "Checkpoint",
    "base_model": "SD 1.5",
    "width": 512,
    "height": 768,
    "sampling_method": "Euler a",
    "sampling_steps": 20,
    "cfg_scale": 6.5,
    "prompt": "a girl",
}


def fields(result) -> set[str]:
    return {r.field for r in result.repairs}


def test_a_valid_plan_passes_unchanged(catalog, index) -> None:
    result = validate_and_repair(GOOD, catalog, index)
    assert not result.hallucinated and result.repairs == []
    assert (result.api.version_id, result.api.sampling_steps, result.api.cfg_scale) == (
        1002,
        20,
        6.5,
    )
    assert result.api.air == catalog.get(1002).air


def test_misspelled_model_goes_to_the_nearest_card_and_counts_as_hallucination(
    catalog, index
) -> None:
    result = validate_and_repair({**GOOD, "model": "AnimMixx", "version_id": 999}, catalog, index)
    assert result.hallucinated
    assert result.api.version_id == 1002 and result.api.model == "AnimeMix"
    assert "model" in fields(result)


def test_model_known_by_name_with_a_wrong_version_id_is_not_a_hallucination(catalog, index) -> None:
    result = validate_and_repair({**GOOD, "version_id": 1001}, catalog, index)
    assert not result.hallucinated and result.api.version_id == 1002
    assert "version_id" in fields(result)


def test_invented_model_without_a_name_falls_back_to_the_prompt(catalog, index) -> None:
    result = validate_and_repair({"prompt": "neon cyberpunk city at night"}, catalog, index)
    assert result.hallucinated and result.api.model == "CyberCity"


def test_base_model_and_type_come_from_the_card(catalog, index) -> None:
    result = validate_and_repair({**GOOD, "base_model": "SDXL 1.0", "type": "LORA"}, catalog, index)
    assert (result.api.base_model, result.api.type) == ("SD 1.5", "Checkpoint")
    assert {"base_model", "type"} <= fields(result)


def test_base_model_constraint_swaps_to_an_allowed_card(catalog, index) -> None:
    result = validate_and_repair(GOOD, catalog, index, Constraints(base_model="SDXL 1.0"))
    assert result.api.base_model == "SDXL 1.0" and result.card.base_model == "SDXL 1.0"
    assert (result.api.width, result.api.height) == (1024, 1024)  # the new card's size, not 512
    assert any("base model must be SDXL 1.0" in r.reason for r in result.repairs)


@pytest.mark.parametrize(
    ("bad", "field", "expected"),
    [
        ({"sampling_steps": 5000}, "sampling_steps", 28),
        ({"sampling_steps": "many"}, "sampling_steps", 28),
        ({"cfg_scale": -3}, "cfg_scale", 8.0),
        ({"sampling_method": "Turbo Magic"}, "sampling_method", "Euler a"),
        ({"width": 513}, "size", 512),
        ({"width": 100000}, "size", 512),
    ],
)
def test_out_of_range_parameters_go_to_the_card_recommendation(
    catalog, index, bad, field, expected
) -> None:
    result = validate_and_repair({**GOOD, **bad}, catalog, index)
    assert field in fields(result)
    value = result.api.width if field == "size" else getattr(result.api, field)
    assert value == expected


def test_sampler_spellings_are_normalised(catalog, index) -> None:
    result = validate_and_repair({**GOOD, "sampling_method": "dpmpp_2m_karras"}, catalog, index)
    assert result.api.sampling_method == "DPM++ 2M Karras"


def test_unknown_parameters_are_dropped_and_recorded(catalog, index) -> None:
    result = validate_and_repair({**GOOD, "temperature": 3, "eta": 0.5}, catalog, index)
    assert {"temperature", "eta"} <= fields(result)


def test_lora_card_gets_a_real_checkpoint_of_its_base_and_itself_as_lora(catalog, index) -> None:
    plan = {
        "model": "Ghibli Style",
        "checkpoint": {"version_id": 2001, "name": "XL Photo"},
        "loras": [{"name": "Made Up LoRA", "weight": 1}],
    }
    result = validate_and_repair(plan, catalog, index)
    api = result.api
    assert api.type == "LORA" and api.version_id == 3001
    assert (
        api.checkpoint is not None and catalog.get(api.checkpoint.version_id).base_model == "SD 1.5"
    )
    assert [lo.version_id for lo in api.loras] == [3001]
    assert {"checkpoint", "loras"} <= fields(result)


def test_extra_lora_of_the_wrong_base_is_dropped(catalog, index) -> None:
    plan = {
        **GOOD,
        "loras": [
            {"version_id": 4001, "name": "XL Detail LoRA", "weight": 0.5},
            {"version_id": 3002, "name": "Watercolor LoRA", "weight": 9},
        ],
    }
    result = validate_and_repair(plan, catalog, index)
    assert [(lo.version_id, lo.weight) for lo in result.api.loras] == [(3002, 0.7)]


def test_no_lora_constraint_replaces_a_lora_card_and_drops_loras(catalog, index) -> None:
    cons = Constraints(prompt="ghibli castle", no_lora=True, model_type="Checkpoint")
    plan = {"model": "Ghibli Style", "loras": [{"version_id": 3002, "name": "Watercolor LoRA"}]}
    result = validate_and_repair(plan, catalog, index, cons)
    assert result.api.type == "Checkpoint" and result.api.loras == []


def test_constraints_are_applied_last(catalog, index) -> None:
    cons = Constraints(
        prompt="a girl",
        aspect="landscape",
        steps=12,
        cfg_scale=4,
        sampler="DDIM",
        negative_prompt="blurry",
        seed=7,
    )
    api = validate_and_repair(GOOD, catalog, index, cons).api
    assert (api.width, api.height, api.sampling_steps, api.cfg_scale) == (768, 512, 12, 4.0)
    assert (api.sampling_method, api.negative_prompt, api.seed) == ("DDIM", "blurry", 7)


@pytest.mark.parametrize(
    "plan",
    [
        None,
        {},
        {"model": 42, "width": None, "loras": "x"},
        {"model": "", "sampling_steps": True, "checkpoint": 7},
    ],
)
def test_garbage_always_becomes_a_valid_api_of_a_real_card(catalog, index, plan) -> None:
    result = validate_and_repair(plan, catalog, index, Constraints(prompt="anime girl"))
    assert isinstance(result.api, T2IApi)
    assert catalog.get(result.api.version_id) is not None


def test_works_without_an_index(catalog) -> None:
    plan = {**GOOD, "model": "RealVisoin", "version_id": None}
    result = validate_and_repair(plan, catalog, None)
    assert result.hallucinated and result.api.model == "RealVision"


def test_card_api_is_the_recommendation(catalog) -> None:
    api = card_api(catalog.get(2002))
    assert (api.width, api.sampling_method, api.base_model) == (1024, "Euler a", "SDXL 1.0")


def test_negative_prompt_never_contradicts_the_prompt_and_lora_triggers_are_added(
    catalog, index
) -> None:
    cons = Constraints(prompt="an anime castle", negative_prompt="anime, blurry")
    api = validate_and_repair({"model": "Ghibli Style"}, catalog, index, cons).api
    assert api.negative_prompt == "blurry"
    assert api.prompt.startswith("ghibli style") and "an anime castle" in api.prompt


def test_comma_list_trigger_words_are_added_once_each(tmp_path) -> None:
    from diffagent.cards import write_cards
    from diffagent.index.catalog import Catalog

    from ..fakes import make_card

    card = make_card(
        5001,
        "Disco Style",
        kind="LORA",
        triggers=["zaum, elysiumchar, portrait", "zaum, elysiumscape, scenery"],
    )
    write_cards([card], tmp_path / "cards.jsonl")
    cons = Constraints(prompt="a cabin in the snow")
    api = validate_and_repair({"model": "Disco Style"}, Catalog.load(tmp_path), None, cons).api
    # Only the scene group for a scene (issue 10): never the character group.
    assert api.prompt == "zaum, elysiumscape, scenery, a cabin in the snow"
    cons = Constraints(prompt="a girl with twin braids")
    api = validate_and_repair({"model": "Disco Style"}, Catalog.load(tmp_path), None, cons).api
    assert api.prompt == "zaum, elysiumchar, portrait, a girl with twin braids"
