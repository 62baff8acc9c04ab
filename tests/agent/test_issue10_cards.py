"""Issue 10: adult-oriented cards stay out of default picks; style-aware re-planning; picks."""

from __future__ import annotations

from pathlib import Path

import pytest

from diffagent.agent.card_api import card_params, relevant_triggers
from diffagent.agent.card_evidence import adult_terms, conflicting_media, is_adult
from diffagent.agent.service import DiffAgent
from diffagent.agent.understand import Constraints
from diffagent.agent.validate import validate_and_repair
from diffagent.cards import write_cards
from diffagent.index.catalog import Catalog, starter_catalog_dir

from ..fakes import FakeIndex, make_card, settings_for

MATUREMALEMIX = 75441
PIXEL_LORA = 12699  # [LuisaP] Pixel art LORA


@pytest.fixture(scope="module")
def starter() -> Catalog:
    return Catalog.load(starter_catalog_dir())


def agent_on(catalog: Catalog, **settings: object) -> DiffAgent:
    config = settings_for(mode="retrieval", ephemeral=True, **settings)
    return DiffAgent.create(config, index=FakeIndex(catalog))


def test_adult_oriented_cards_are_judged_by_their_evidence(starter: Catalog) -> None:
    mature = starter.get(MATUREMALEMIX)
    assert mature is not None and is_adult(mature)
    assert {"bara", "yaoi"} <= adult_terms(mature)
    flagged = [card for card in starter if is_adult(card)]
    assert len(flagged) <= 5  # general-purpose cards are not caught
    for name in ("Deliberate", "CyberRealistic", "AnythingElse V4", "[LuisaP] Pixel art LORA"):
        assert not any(is_adult(card) for card in starter.by_name(name))


def test_corgi_request_never_lands_on_an_adult_checkpoint(starter: Catalog) -> None:
    agent = agent_on(starter)
    session = agent.new_session()
    seen = []
    for message in ["a welsh corgi walking in the sunlight", "no LoRA", "another model"]:
        result = agent.reply(session, message)
        used = [result.api.version_id, *(lo.version_id for lo in result.api.loras)]
        if result.api.checkpoint is not None:
            used.append(result.api.checkpoint.version_id)
        seen += used
    assert MATUREMALEMIX not in seen
    refused = agent.reply(session, f"use version {MATUREMALEMIX}")
    assert "adult-oriented" in refused.reply and refused.api.version_id != MATUREMALEMIX
    allowed = agent_on(starter, allow_nsfw=True)  # NSFW allowed: the user may pick it
    session = allowed.new_session()
    allowed.reply(session, "a welsh corgi walking in the sunlight")
    picked = allowed.reply(session, f"use version {MATUREMALEMIX}")
    assert picked.api.version_id == MATUREMALEMIX


def test_a_loras_adult_base_checkpoint_is_replaced(starter: Catalog, tmp_path: Path) -> None:
    lora = starter.get(PIXEL_LORA)
    assert lora is not None
    moved = lora.model_copy(deep=True)
    moved.recommended.base_checkpoint_version_id = MATUREMALEMIX
    cards = [moved if card.version_id == PIXEL_LORA else card for card in starter]
    write_cards(cards, tmp_path / "cards.jsonl")
    catalog = Catalog.load(tmp_path)
    cons = Constraints(prompt="a cute happy corgi, pixel art")
    api = validate_and_repair({"version_id": PIXEL_LORA}, catalog, None, cons).api
    assert api.checkpoint is not None and api.checkpoint.version_id != MATUREMALEMIX
    planned = {"version_id": PIXEL_LORA, "checkpoint": {"version_id": MATUREMALEMIX}}
    api = validate_and_repair(planned, catalog, None, cons).api
    assert api.checkpoint is not None and api.checkpoint.version_id != MATUREMALEMIX
    swapped = validate_and_repair({"model": "maturemalemix"}, catalog, FakeIndex(catalog), cons)
    assert swapped.card.version_id != MATUREMALEMIX
    nsfw = cons.model_copy(update={"allow_adult": True})
    api = validate_and_repair({"version_id": PIXEL_LORA}, catalog, None, nsfw).api
    assert api.checkpoint is not None and api.checkpoint.version_id == MATUREMALEMIX


def test_another_model_stays_in_the_asked_medium_and_says_when_none_is_left(
    tmp_path: Path,
) -> None:
    cards = [
        make_card(1, "Anime One", tags=["anime"], downloads=900),
        make_card(2, "Anime Two", tags=["anime", "2d"], downloads=800),
        make_card(3, "Photo Real", tags=["photorealistic", "photo"], downloads=5000),
    ]
    write_cards(cards, tmp_path / "cards.jsonl")
    agent = agent_on(Catalog.load(tmp_path))
    session = agent.new_session()
    names = [agent.reply(session, "a cabin in the snow, anime").api.model]
    names.append(agent.reply(session, "another model").api.model)
    last = agent.reply(session, "another model")
    assert names == ["Anime One", "Anime Two"] and last.api.model == "Anime Two"
    assert "No other model fits" in last.reply
    assert conflicting_media(cards[2], ["anime"]) == ["photorealistic"]


def test_pick_by_name_through_the_agent(starter: Catalog) -> None:
    agent = agent_on(starter)
    session = agent.new_session()
    first = agent.reply(session, "a cozy cabin in snowy mountains at dusk, oil painting")
    alternative = first.alternatives[0]
    picked = agent.reply(session, f"use version {alternative.version_id}")
    assert picked.api.version_id == alternative.version_id
    by_name = agent.reply(session, "use AnythingElse V4")
    assert by_name.api.model == "AnythingElse V4" and "cabin" in by_name.api.prompt
    missing = agent.reply(session, "use version 999999999")
    assert "no version 999999999" in missing.reply and missing.api.model == "AnythingElse V4"


def test_trigger_groups_and_weight_syntax_from_the_card(tmp_path: Path) -> None:
    card = make_card(
        9,
        "Multi Concept",
        kind="LORA",
        triggers=["red dress", "blue armor, shield", "<multi_concept:0.6>"],
    )
    card.recommended.lora_weight = None
    assert relevant_triggers("a knight in blue armor", card) == ["blue armor, shield"]
    assert relevant_triggers("a portrait", card) == ["red dress"]
    assert card_params(card).lora_weight == 0.6
