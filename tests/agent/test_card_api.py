"""One card-to-API function: every planning mode gives a card the same parameters."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from diffagent.agent.card_api import card_api, card_params
from diffagent.agent.service import DiffAgent
from diffagent.agent.understand import Constraints
from diffagent.cards import write_cards
from diffagent.index.catalog import Catalog

from ..fakes import FakeIndex, make_card, settings_for
from .conftest import ScriptedBackend

ODD = make_card(
    7001,
    "OddRecs",
    tags=["lighthouse", "storm", "seascape"],
    size=(517, 3000),
    sampler="k_euler_a",
    steps=500,
    cfg=0.2,
    downloads=50_000,
)
PLAIN = make_card(7002, "PlainMix", tags=["portrait", "photo"], downloads=90_000)
LORA = make_card(7003, "Ink Wash", kind="LORA", tags=["ink", "lighthouse"], triggers=["inkwash"])
PARAMS = ("width", "height", "sampling_method", "sampling_steps", "cfg_scale", "clip_skip")


def test_card_params_are_clamped_into_range() -> None:
    params = card_params(ODD)
    assert (params.width, params.height) == (520, 2048)
    assert (params.sampling_method, params.sampling_steps, params.cfg_scale) == (
        "Euler a",
        150,
        1.0,
    )


def _agent(tmp_path: Path, mode: str, backend: ScriptedBackend | None) -> DiffAgent:
    write_cards([ODD, PLAIN, LORA], tmp_path / "cards.jsonl")
    index = FakeIndex(Catalog.load(tmp_path))
    # Parity of the planning modes; composition (the same in every mode) is tested on its own.
    settings = settings_for(
        mode=mode, ephemeral=True, rank_prior=0.0, **{"composition.max_loras": 0}
    )
    return DiffAgent.create(settings, backend=backend, index=index)


def _backend(mode: str, card_name: str) -> ScriptedBackend | None:
    if mode == "rank":
        return ScriptedBackend(prefer=[card_name])
    if mode == "generate":
        # The planner names the model only: validation completes the rest from the card.
        return ScriptedBackend(replies=[json.dumps({"model": card_name})])
    return None


@pytest.mark.parametrize(
    ("card", "prompt"),
    [(ODD, "a lighthouse in a storm, seascape"), (LORA, "an ink lighthouse, inkwash")],
    ids=["checkpoint", "lora"],
)
@pytest.mark.parametrize("refinement", ["", ", square, 40 steps"], ids=["card", "constraints"])
def test_every_mode_gives_the_same_parameters(
    tmp_path: Path, card, prompt: str, refinement: str
) -> None:
    apis = {}
    for mode in ("retrieval", "rank", "generate"):
        agent = _agent(tmp_path / mode, mode, _backend(mode, card.name))
        turn = agent.reply(agent.new_session(), prompt + refinement)
        assert turn.api is not None and turn.card is not None
        assert turn.card.version_id == card.version_id, mode
        apis[mode] = turn.api
    expected = card_api(card, Constraints(prompt=prompt))
    for mode, api in apis.items():
        got = {name: getattr(api, name) for name in PARAMS}
        want = {name: getattr(expected, name) for name in PARAMS}
        if refinement:
            want.update(width=512, height=512, sampling_steps=40)
        assert got == want, mode
        assert [(lo.version_id, lo.weight) for lo in api.loras] == [
            (lo.version_id, lo.weight) for lo in expected.loras
        ], mode
        assert api.prompt == apis["rank"].prompt and api.negative_prompt == expected.negative_prompt
