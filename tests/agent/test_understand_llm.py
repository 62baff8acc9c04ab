"""LLM understanding: structured Constraints JSON, held to the rules, rules as the fallback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from diffagent.agent.planner import PlannerConfig
from diffagent.agent.service import DiffAgent
from diffagent.agent.understand import Constraints, understand
from diffagent.agent.understand_llm import LLMReading, understand_with_llm
from diffagent.index.catalog import Catalog

from ..fakes import FakeIndex, settings_for

LAST = {"model": "AnimeMix", "version_id": 1002, "type": "Checkpoint", "base_model": "SD 1.5"}
CABIN = Constraints(prompt="a cozy cabin in snowy mountains at dusk, oil painting")


class ReadingLLM:
    """A backend that answers every understanding request with one scripted reply."""

    name = "reading"

    def __init__(self, reply: str | dict[str, Any]) -> None:
        self.reply = reply if isinstance(reply, str) else json.dumps(reply)
        self.requests: list[dict[str, Any]] = []

    def complete(
        self,
        messages: list[dict[str, str]],
        *,
        json_schema: dict | None = None,
        max_new_tokens: int = 256,
    ) -> str:
        self.requests.append({"messages": messages, "json_schema": json_schema})
        return self.reply

    def score_continuations(self, messages: list[dict[str, str]], items: list[str]) -> list[float]:
        return [0.0] * len(items)


def reading(**constraints: Any) -> dict[str, Any]:
    return {
        "intent": "image",
        "constraints": {**CABIN.model_dump(mode="json"), **constraints},
        "replan": False,
        "changes": ["scripted"],
    }


def test_the_model_writes_the_constraints_under_the_schema() -> None:
    llm = ReadingLLM(
        reading(prompt="a cozy cabin in snowy mountains at dusk, anime", styles=["anime"])
    )
    result = understand_with_llm("make it anime", CABIN, llm, current_api=LAST)
    assert (
        result.constraints.prompt.endswith("anime")
        and "oil painting" not in result.constraints.prompt
    )
    assert result.replan  # the prompt changed, whatever the model said about re-planning
    assert result.changes == ["scripted"]
    request = llm.requests[0]
    assert request["json_schema"] == LLMReading.model_json_schema()
    sent = json.loads(request["messages"][1]["content"])
    assert sent["message"] == "make it anime" and sent["current_card"]["version_id"] == 1002
    assert sent["previous_constraints"]["prompt"] == CABIN.prompt


def test_the_rules_bound_what_the_model_may_set() -> None:
    llm = ReadingLLM(
        reading(
            allow_adult=True,
            exclude_version_ids=[1002, 4242],
            steps=900,
            cfg_scale=0.1,
            width=99999,
            seed=7,
        )
    )
    result = understand_with_llm("seed 7", CABIN, llm, current_api=LAST, allow_nsfw=False)
    c = result.constraints
    assert c.allow_adult is False  # the settings' NSFW policy, not the model's
    assert c.exclude_version_ids == [1002]  # only the current card may be excluded
    assert (c.steps, c.cfg_scale, c.width, c.seed) == (150, 1.0, None, 7)
    assert any("out of range" in note for note in result.notes)


@pytest.mark.parametrize(
    "reply",
    [
        "I think they want anime.",  # no JSON at all
        '{"intent": "image", "replan": true}',  # no constraints
        json.dumps(reading(prompt="   ")),  # an empty prompt is no request
        json.dumps({**reading(), "intent": "dance"}),  # not in the schema
    ],
)
def test_unusable_answers_fall_back_to_the_rules(reply: str) -> None:
    result = understand_with_llm("40 steps", CABIN, ReadingLLM(reply), current_api=LAST)
    assert result == understand("40 steps", CABIN, current_api=LAST)


def test_a_failing_endpoint_falls_back_to_the_rules() -> None:
    class Down(ReadingLLM):
        def complete(self, messages: list[dict[str, str]], **_: Any) -> str:
            raise ConnectionError("endpoint down")

    result = understand_with_llm("seed 42", CABIN, Down(""), current_api=LAST)
    assert result.constraints.seed == 42 and result.constraints.prompt == CABIN.prompt


def test_the_gates_stay_rules_and_never_ask_the_model() -> None:
    llm = ReadingLLM(reading())
    assert understand_with_llm("", CABIN, llm).intent == "empty"
    assert understand_with_llm("nude portrait", CABIN, llm).intent == "nsfw"
    assert llm.requests == []


def test_llm_understanding_needs_an_endpoint() -> None:
    with pytest.raises(ValidationError, match="understanding 'llm' needs"):
        PlannerConfig(understanding="llm")
    config = PlannerConfig(understanding="llm", backend="openai", base_url="http://127.0.0.1:9/v1")
    assert config.understanding == "llm"


def test_the_agent_reads_chat_turns_with_the_model(catalog: Catalog, tmp_path: Path) -> None:
    llm = ReadingLLM(reading(seed=4242))
    settings = settings_for(mode="retrieval", ephemeral=True, output_dir=tmp_path).with_overrides(
        {
            "planner.understanding": "llm",
            "planner.backend": "openai",
            "planner.base_url": "http://127.0.0.1:9/v1",
        }
    )
    agent = DiffAgent.create(settings, backend=llm, index=FakeIndex(catalog))
    try:
        session = agent.new_session()
        first = agent.reply(session, CABIN.prompt)
        assert first.api is not None and first.api.seed == 4242
        assert len(llm.requests) == 1
    finally:
        agent.close()
