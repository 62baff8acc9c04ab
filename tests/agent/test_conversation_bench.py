"""The scripted conversations of bench/conversations.json on the starter catalog.

The bench plays them on the real hybrid index; here a lexical stand-in over the same 500 starter
cards keeps the test fast (about 15 s for all of them).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from diffagent.agent.conversation_eval import (
    Conversation,
    check_turn,
    load_conversations,
    run_conversation,
)
from diffagent.agent.service import DiffAgent
from diffagent.index.catalog import Catalog, starter_catalog_dir

from ..fakes import FakeIndex, settings_for

DATA = Path(__file__).resolve().parents[2] / "bench" / "conversations.json"


@pytest.fixture(scope="module")
def starter_agent(tmp_path_factory: pytest.TempPathFactory) -> DiffAgent:
    catalog = Catalog.load(starter_catalog_dir())
    settings = settings_for(mode="retrieval", ephemeral=True)
    return DiffAgent.create(settings, index=FakeIndex(catalog))


def test_the_bench_has_forty_conversations_of_every_type() -> None:
    conversations = load_conversations(DATA)
    assert len(conversations) >= 40
    kinds = {c.type for c in conversations}
    assert {"medium", "style", "another_model", "triggers", "base", "type", "size"} <= kinds
    assert {"steps", "seed", "cfg_sampler", "question", "decline", "sfw", "pick"} <= kinds


@pytest.mark.parametrize("conversation", load_conversations(DATA), ids=lambda c: c.id)
def test_scripted_conversation(starter_agent: DiffAgent, conversation: Conversation) -> None:
    outcome = run_conversation(starter_agent, conversation, starter_agent.context.catalog)
    failed = [(t.say, t.model, t.prompt, t.failures) for t in outcome.turns if t.failures]
    assert not failed


def test_checks_catch_a_broken_answer(starter_agent: DiffAgent) -> None:
    """The checker is not vacuous: a kept prompt, a mixed medium and a wrong seed all fail."""
    session = starter_agent.new_session()
    first = starter_agent.reply(session, "a watercolor fox in a forest")
    result = starter_agent.reply(session, "seed 42")
    catalog = starter_agent.context.catalog
    assert check_turn(result, {"seed": 42, "kept": True}, first, catalog) == []
    failures = check_turn(result, {"seed": 7, "prompt_lacks": ["fox"]}, first, catalog)
    assert any("seed" in f for f in failures) and any("fox" in f for f in failures)
    broken = result.model_copy(
        update={"api": result.api.model_copy(update={"prompt": "anime, a watercolor fox"})}
    )
    assert any("mixes media" in f for f in check_turn(broken, {}, first, catalog))
