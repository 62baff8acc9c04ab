"""Issue 10 composition: LoRAs per concept, their weights and cap, and the composition edits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from diffagent.agent.card_api import card_api
from diffagent.agent.compose import cap_weights, compose, concepts
from diffagent.agent.service import DiffAgent
from diffagent.agent.understand import Constraints, understand
from diffagent.api import CheckpointRef, LoraRef, T2IApi
from diffagent.cards import write_cards
from diffagent.index.catalog import Catalog
from diffagent.tools.exports import export_text

from ..fakes import FakeIndex, make_card, settings_for

BASE = make_card(100, "Base Mix", tags=["general"], downloads=50_000)
WATERCOLOR = make_card(201, "Watercolor Wash", kind="LORA", tags=["watercolor", "style"])
CASTLE = make_card(202, "Castle Builder", kind="LORA", tags=["castle", "architecture"])
DRAGON = make_card(203, "Dragon Wings", kind="LORA", tags=["dragon", "wings"])
XL_CASTLE = make_card(204, "XL Castle", kind="LORA", base="SDXL 1.0", tags=["castle"])
HERO = make_card(205, "Hero Knight", kind="LORA", tags=["character", "castle"])
ADULT = make_card(206, "Castle Lewd", kind="LORA", tags=["nsfw", "castle"], downloads=90_000)
ANIME_CASTLE = make_card(207, "Anime Castle", kind="LORA", tags=["anime", "castle"])
NEGATIVE = make_card(208, "Castle Detail Minus", kind="LORA", tags=["castle", "detail"])
NEGATIVE.recommended.lora_weight = -1.0
CARDS = [BASE, WATERCOLOR, CASTLE, DRAGON, XL_CASTLE, HERO, ADULT, ANIME_CASTLE, NEGATIVE]
for _card, _downloads in ((HERO, 80_000), (ANIME_CASTLE, 70_000), (NEGATIVE, 60_000)):
    _card.stats.downloads = _downloads  # ranked above Castle Builder: each must be passed over


def _agent(tmp_path: Path, **values: object) -> DiffAgent:
    write_cards(CARDS, tmp_path / "cards.jsonl")
    settings = settings_for(mode="retrieval", ephemeral=True, **values)
    return DiffAgent.create(settings, index=FakeIndex(Catalog.load(tmp_path)))


def _compose(agent: DiffAgent, prompt: str) -> tuple[dict, list[dict]]:
    cons = Constraints(prompt=prompt)
    api = card_api(BASE, cons).model_dump(mode="json")
    composed, composition, _ = compose(agent.context, cons, api)
    return composed, composition


def test_concepts_are_the_styles_then_the_phrases() -> None:
    cons = Constraints(prompt="a castle with a dragon, at night, watercolor")
    assert concepts(cons) == [
        ("watercolor", "style"),
        ("a castle", "content"),
        ("a dragon", "content"),
        ("at night", "content"),
    ]
    assert concepts(Constraints(prompt="a beautiful girl, masterpiece")) == []


def test_one_lora_per_concept_of_the_checkpoints_base_without_unasked_characters(
    tmp_path: Path,
) -> None:
    agent = _agent(tmp_path)
    api, composition = _compose(agent, "a castle with a dragon, watercolor")
    # Passed over: the SDXL LoRA, the character, the adult card, the anime one (another medium)
    # and the one whose evidence weight is negative.
    assert [lo["name"] for lo in api["loras"]] == [
        "Watercolor Wash",
        "Castle Builder",
        "Dragon Wings",
    ]
    assert [item["concept"] for item in composition] == ["watercolor", "a castle", "a dragon"]
    assert [item["role"] for item in composition] == ["style", "content", "content"]
    # Evidence weights 0.7 each (2.1) are capped at 2.0: the style LoRA keeps its weight.
    weights = [lo["weight"] for lo in api["loras"]]
    assert weights[0] == 0.7 and sum(weights) <= 2.0 and weights[1] == weights[2] < 0.7
    assert all(lo["base_model"] == "SD 1.5" for lo in api["loras"])

    named = _compose(agent, "Hero Knight guarding a castle")[0]
    assert "Hero Knight" in [lo["name"] for lo in named["loras"]]  # named: allowed


def test_settings_limit_the_composition(tmp_path: Path) -> None:
    agent = _agent(tmp_path, **{"composition.max_loras": 2, "composition.max_total_weight": 1.0})
    api, _ = _compose(agent, "a castle with a dragon, watercolor")
    assert [lo["name"] for lo in api["loras"]] == ["Watercolor Wash", "Castle Builder"]
    assert [lo["weight"] for lo in api["loras"]] == [0.7, 0.3]


def test_cap_scales_other_loras_first_and_leaves_out_tiny_ones() -> None:
    def items(*weights: tuple[str, float]) -> list[dict]:
        return [{"role": r, "weight": w, "own": False} for r, w in weights]

    assert [i["weight"] for i in cap_weights(items(("style", 1.0), ("content", 0.8)), 2.0)] == [
        1.0,
        0.8,
    ]
    capped = cap_weights(items(("style", 1.2), ("content", 1.0), ("content", 1.0)), 2.0)
    assert [i["weight"] for i in capped] == [1.2, 0.4, 0.4]
    assert [i["weight"] for i in cap_weights(items(("style", 1.5), ("style", 1.5)), 2.0)] == [
        1.0,
        1.0,
    ]
    assert cap_weights(items(("style", 1.95), ("content", 1.0)), 2.0) == items(("style", 1.95))
    own = [{"role": "model", "weight": 1.2, "own": True}, *items(("style", 1.2), ("content", 0.5))]
    assert [i["weight"] for i in cap_weights(own, 2.0)] == [1.0, 1.0]  # the model's LoRA stays


CURRENT = {
    "version_id": 100,
    "type": "Checkpoint",
    "sampling_steps": 25,
    "loras": [
        {"version_id": 201, "name": "Watercolor Wash", "weight": 0.7},
        {"version_id": 202, "name": "Castle Builder", "weight": 0.6},
    ],
}


@pytest.mark.parametrize(
    ("message", "field", "value"),
    [
        ("fewer LoRAs", "max_loras", 1),
        ("only one LoRA", "max_loras", 1),
        ("drop the castle builder LoRA", "drop_lora_ids", [202]),
        ("remove Watercolor Wash", "drop_lora_ids", [201]),
        ("stronger style", "style_strength", 1.25),
        ("weaker style", "style_strength", 0.8),
    ],
)
def test_composition_edits_keep_the_model(message: str, field: str, value: object) -> None:
    previous = Constraints(prompt="a castle, watercolor")
    result = understand(message, previous, current_api=CURRENT)
    assert getattr(result.constraints, field) == value
    assert not result.replan and result.constraints.prompt == previous.prompt
    assert result.changes


def test_dropping_the_chosen_lora_chooses_again_and_no_lora_still_means_checkpoints() -> None:
    previous = Constraints(prompt="a castle, watercolor")
    own = {**CURRENT, "version_id": 201, "type": "LORA"}
    result = understand("drop the Watercolor Wash LoRA", previous, current_api=own)
    assert result.replan and 201 in result.constraints.exclude_version_ids
    assert understand("drop the LoRA", previous, current_api=CURRENT).constraints.no_lora
    unknown = understand("drop the Pirate LoRA", previous, current_api=CURRENT)
    assert unknown.changes == [] and "Castle Builder" in unknown.notes[0]
    background = {**CURRENT, "loras": [{"version_id": 9, "name": "Detailed Background"}]}
    content = understand("without the background", previous, current_api=background)
    assert (
        content.constraints.drop_lora_ids == []
        and "background" in content.constraints.negative_prompt
    )
    cjk = {**CURRENT, "loras": [{"version_id": 8, "name": "墨心"}]}
    assert understand(
        "drop the 墨心 LoRA", previous, current_api=cjk
    ).constraints.drop_lora_ids == [8]
    explore = understand("try a few models", previous, current_api=CURRENT)
    assert explore.explore and explore.replan


def test_edits_in_a_conversation(tmp_path: Path) -> None:
    agent = _agent(tmp_path)
    session = agent.new_session()
    first = agent.reply(session, "a castle with a dragon, watercolor")
    assert first.api is not None and len(first.api.loras) >= 2
    assert "Composition:" in first.reply

    fewer = agent.reply(session, "fewer LoRAs")
    assert fewer.api is not None and len(fewer.api.loras) == len(first.api.loras) - 1
    assert fewer.api.version_id == first.api.version_id
    last = fewer.api.loras[-1]
    dropped = agent.reply(session, f"drop the {last.name} LoRA")
    assert dropped.api is not None and last.version_id not in {
        lo.version_id for lo in dropped.api.loras
    }
    style_before = sum(i["weight"] for i in dropped.composition if i["role"] == "style")
    stronger = agent.reply(session, "stronger style")
    style_after = sum(i["weight"] for i in stronger.composition if i["role"] == "style")
    assert style_after > style_before
    assert stronger.api is not None and stronger.api.version_id == first.api.version_id
    # Every export lists every composed LoRA.
    a1111 = json.loads(stronger.exports["a1111"])
    for lora in stronger.api.loras:
        assert f":{lora.weight:g}>" in a1111["prompt"]


def test_two_loras_with_hostile_file_names_stay_data_in_every_export() -> None:
    api = T2IApi(
        model="Base",
        type="Checkpoint",
        base_model="SD 1.5",
        width=512,
        height=512,
        sampling_method="Euler a",
        sampling_steps=20,
        cfg_scale=7.0,
        version_id=1,
        checkpoint=CheckpointRef(version_id=1, name="Base"),
        loras=[
            LoraRef(version_id=2, name="a'); import os; ('", weight=0.7),
            LoraRef(version_id=3, name="b", weight=0.5),
        ],
        prompt="a castle",
    )
    files = {2: "x:1> <lora:evil:2.safetensors", 3: "b.safetensors"}
    prompt = json.loads(export_text(api, "a1111", files))["prompt"]
    assert prompt.count("<lora:") == 2 and "<lora:evil" not in prompt
    code = export_text(api, "diffusers", files)
    assert code.count("load_lora_weights(") == 2 and "import os" not in code.replace(
        repr("a'); import os; ('"), ""
    )
    nodes = json.loads(export_text(api, "comfyui", files))
    assert sum(node["class_type"] == "LoraLoader" for node in nodes.values()) == 2


def test_try_a_few_models_without_a_model_store_names_the_next_candidates(tmp_path: Path) -> None:
    agent = _agent(tmp_path)
    session = agent.new_session()
    agent.reply(session, "a castle with a dragon, watercolor")
    turn = agent.reply(session, "try a few models")
    assert turn.api is not None and turn.attempts == []
    assert "Trying models needs images" in turn.reply and "next candidates are: " in turn.reply
