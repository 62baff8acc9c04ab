"""Scripted multi-turn conversations with expected properties per turn, checked on a DiffAgent.

Used by `bench/bench_conversations.py` (pass rates per refinement type on a catalog) and by a fast
test on the starter catalog. Every image turn is also checked for what must always hold: no
adult-oriented card, at most one rendering medium in the prompt, at most one trigger-word group,
and a valid composition (at most 3 LoRAs of the checkpoint's base, total weight at most 2, no
character LoRA the user did not name). "{lora}" in a message names the previous turn's last
composed LoRA ("drop the {lora} LoRA"); as an expected value it is that LoRA's version id.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, Field

from diffagent.agent.card_api import trigger_groups
from diffagent.agent.card_evidence import (
    conflicting_media,
    is_adult,
    is_character,
    named_in,
    style_score,
)
from diffagent.agent.understand_style import media_of
from diffagent.api import T2IApi
from diffagent.cards import ModelCard
from diffagent.index.catalog import Catalog

MAX_LORAS = 3
"""LoRAs a composition may have (the default `Settings.composition.max_loras`)."""
MAX_TOTAL_WEIGHT = 2.0
"""Their total weight at most (the default `Settings.composition.max_total_weight`)."""


class Turn(BaseModel):
    """One user message and the properties its answer must have."""

    say: str = Field(description="The message; '{alt}' is the previous turn's first alternative.")
    expect: dict[str, Any] = Field(default_factory=dict, description="Property -> expected value.")


class Conversation(BaseModel):
    """A scripted conversation of one refinement type."""

    id: str
    type: str = Field(description="The refinement type it exercises (style, seed, ...).")
    turns: list[Turn]


class TurnOutcome(BaseModel):
    """What one turn of a scripted conversation produced and which checks failed."""

    say: str
    model: str | None = None
    prompt: str | None = None
    failures: list[str] = Field(default_factory=list)


class ConversationOutcome(BaseModel):
    """A conversation's turns and whether all of them passed."""

    id: str
    type: str
    turns: list[TurnOutcome]

    @property
    def passed(self) -> bool:
        """Whether every turn passed every check."""
        return all(not turn.failures for turn in self.turns)


class ChatAgent(Protocol):
    """The part of DiffAgent the evaluation uses."""

    def new_session(self) -> str:
        """Create a conversation."""
        ...

    def reply(self, session_id: str | None, message: str) -> Any:
        """Run one turn; returns a TurnResult."""
        ...


def load_conversations(path: Path) -> list[Conversation]:
    """Read the scripted conversations of a JSON file (a list of conversations)."""
    return [Conversation.model_validate(item) for item in json.loads(path.read_text("utf-8"))]


def run_conversation(agent: ChatAgent, conversation: Conversation, catalog: Catalog) -> Any:
    """Play `conversation` on `agent` and check every turn; returns a ConversationOutcome."""
    session = agent.new_session()
    previous: Any = None
    outcomes = []
    alt: int | None = None  # fixed the first time a turn names it
    lora: tuple[int, str] | None = None  # likewise
    said: list[str] = []
    for turn in conversation.turns:
        if alt is None and "{alt}" in turn.say:
            alt = previous.alternatives[0].version_id if previous and previous.alternatives else 0
        if lora is None and "{lora}" in turn.say:
            lora = composed_lora(previous)
        message = turn.say.replace("{alt}", str(alt)).replace("{lora}", lora[1] if lora else "")
        values = {"{alt}": alt, "{lora}": lora[0] if lora else 0}
        expect = {k: values.get(v, v) if isinstance(v, str) else v for k, v in turn.expect.items()}
        said.append(message)
        expect["_said"] = " | ".join(said)
        result = agent.reply(session, message)
        failures = check_turn(result, expect, previous, catalog)
        api = result.api
        outcomes.append(
            TurnOutcome(
                say=message,
                model=api.model if api else None,
                prompt=api.prompt if api else None,
                failures=failures,
            )
        )
        if result.api is not None:
            previous = result
    return ConversationOutcome(id=conversation.id, type=conversation.type, turns=outcomes)


def composed_lora(previous: Any) -> tuple[int, str]:
    """(version id, name) of the last LoRA composed for a concept in the previous turn.

    What "drop the {lora} LoRA" names; (0, "none") when the previous turn composed none.
    """
    items = [item for item in getattr(previous, "composition", None) or [] if not item["own"]]
    return (int(items[-1]["version_id"]), str(items[-1]["name"])) if items else (0, "none")


def check_turn(result: Any, expect: dict[str, Any], previous: Any, catalog: Catalog) -> list[str]:
    """The failed checks of one turn's TurnResult against `expect` (empty when all pass)."""
    failures: list[str] = []
    intent = expect.get("intent", "image")
    if result.intent != intent:
        failures.append(f"intent {result.intent!r} != {intent!r}")
    reply = result.reply.lower()
    for text in expect.get("reply_has", []):
        if text.lower() not in reply:
            failures.append(f"reply lacks {text!r}")
    for text in expect.get("changes_has", []):
        if not any(text.lower() in change.lower() for change in result.changes):
            failures.append(f"changes {result.changes} lack {text!r}")
    api: T2IApi | None = result.api
    if intent != "image":
        if api is not None:
            failures.append("an API was returned for a non-image turn")
        return failures
    if api is None:
        return [*failures, "no API"]
    card = catalog.get(api.version_id or -1)
    if card is None:
        return [*failures, f"version {api.version_id} is not in the catalog"]
    failures += _always(api, card, catalog, expect.get("_said", ""))
    failures += _check_api(api, card, expect, catalog)
    if previous is not None and previous.api is not None:
        same = previous.api.version_id == api.version_id
        if expect.get("kept") and not same:
            failures.append(f"model changed from {previous.api.model!r}")
        if expect.get("changed") and same:
            failures.append(f"model kept ({api.model!r})")
        failures += _check_composition_edit(result, expect, previous, catalog)
    return failures


def _style_weight(result: Any) -> float:
    return sum(item["weight"] for item in result.composition if item["role"] == "style")


def _model_of(catalog: Catalog, version_id: int) -> tuple[int, str] | int:
    card = catalog.get(version_id)
    return (card.model_id, card.name) if card is not None else version_id


def _check_composition_edit(
    result: Any, expect: dict[str, Any], previous: Any, catalog: Catalog
) -> list[str]:
    """Checks of "fewer LoRAs", "drop the X LoRA" and "stronger style" against the last turn."""
    failures = []
    api, before = result.api, previous.api
    same_checkpoint = (api.checkpoint, api.version_id) == (before.checkpoint, before.version_id)
    if expect.get("fewer_loras"):
        if len(api.loras) >= len(before.loras):
            failures.append(f"{len(api.loras)} LoRAs, not fewer than {len(before.loras)}")
        if not same_checkpoint:
            failures.append("fewer LoRAs changed the model")
    dropped = expect.get("dropped")
    if dropped is not None:
        if not dropped:
            failures.append("the previous turn composed no LoRA to drop")
        elif _model_of(catalog, dropped) in {_model_of(catalog, lo.version_id) for lo in api.loras}:
            failures.append(f"LoRA {dropped} (or another version of it) is still composed")
        elif not same_checkpoint:
            failures.append("dropping a composed LoRA changed the model")
    if expect.get("style_up"):
        if _style_weight(previous) <= 0:
            failures.append("the previous turn had no style LoRA")
        elif _style_weight(result) <= _style_weight(previous) and "weight cap" not in result.reply:
            # A composition at the total weight cap may only say so.
            failures.append(
                f"style weight {_style_weight(result):g} not above {_style_weight(previous):g}"
            )
    return failures


def _always(api: T2IApi, card: ModelCard, catalog: Catalog, said: str) -> list[str]:
    """Checks every image turn must pass (`said`: the user's messages so far)."""
    failures = []
    ids = [api.version_id, *(lo.version_id for lo in api.loras)]
    if api.checkpoint is not None:
        ids.append(api.checkpoint.version_id)
    for version_id in ids:
        used = catalog.get(version_id or -1)
        if used is not None and is_adult(used):
            failures.append(f"adult-oriented card {used.display_name!r}")
    failures += _composition_rules(api, catalog, said)
    media = media_of(api.prompt)
    if len(media) > 1:
        failures.append(f"prompt mixes media {media}")
    groups = trigger_groups(card)
    if len(groups) > 1:
        prompt = api.prompt.lower()
        added = [g for g in groups if _group_marker(g, groups) not in said.lower()]
        used = [g for g in added if _group_marker(g, groups) in prompt]
        # A group inside another used group ("shorts" in "red shorts") is not a second concept.
        used_groups = [g for g in used if not any(g != o and g.lower() in o.lower() for o in used)]
        if len(used_groups) > 1:
            failures.append(f"several trigger groups in the prompt: {used_groups}")
    return failures


def _composition_rules(api: T2IApi, catalog: Catalog, said: str) -> list[str]:
    """At most 3 LoRAs, total weight capped, all of the checkpoint's base, no unasked character."""
    failures = []
    if len(api.loras) > MAX_LORAS:
        failures.append(f"{len(api.loras)} LoRAs > {MAX_LORAS}")
    total = sum(lo.weight for lo in api.loras if lo.weight > 0)
    if total > MAX_TOTAL_WEIGHT + 1e-6:
        failures.append(f"total LoRA weight {total:g} > {MAX_TOTAL_WEIGHT:g}")
    checkpoint = catalog.get(api.checkpoint.version_id) if api.checkpoint else None
    for lora in api.loras:
        card = catalog.get(lora.version_id)
        if card is None:
            failures.append(f"LoRA {lora.version_id} is not in the catalog")
            continue
        if card.base_model != api.base_model or (
            checkpoint is not None and checkpoint.base_model != card.base_model
        ):
            failures.append(f"LoRA {card.display_name!r} is {card.base_model}")
        if is_character(card) and not named_in(card, said):
            failures.append(f"character LoRA {card.display_name!r} nobody asked for")
    return failures


def _group_marker(group: str, groups: list[str]) -> str:
    """The first comma item of `group` that no other group has (how to see it in a prompt)."""
    others = {w.strip().lower() for g in groups if g != group for w in g.split(",")}
    items = [w.strip().lower() for w in group.split(",") if w.strip()]
    return next((w for w in items if w not in others), items[0] if items else group.lower())


def _check_api(api: T2IApi, card: ModelCard, expect: dict[str, Any], catalog: Catalog) -> list[str]:
    failures = []
    prompt = api.prompt.lower()
    for word in expect.get("prompt_has", []):
        if word.lower() not in prompt:
            failures.append(f"prompt lacks {word!r}")
    for word in expect.get("prompt_lacks", []):
        if re.search(rf"(?<![\w-]){re.escape(word.lower())}(?![\w-])", prompt):
            failures.append(f"prompt has {word!r}")
    style = expect.get("style")
    if style:
        if style_score(card, style) <= 0:
            failures.append(f"card {card.display_name!r} shows no {style!r} evidence")
        if conflicting_media(card, [style]):
            failures.append(f"card {card.display_name!r} shows another medium")
    fields = {
        "type": api.type,
        "steps": api.sampling_steps,
        "seed": api.seed,
        "cfg": api.cfg_scale,
        "sampler": api.sampling_method,
        "width": api.width,
        "height": api.height,
        "version": api.version_id,
    }
    for key, value in fields.items():
        if key in expect and expect[key] != value:
            failures.append(f"{key} {value!r} != {expect[key]!r}")
    bases = {c.base_model for c in catalog}
    wanted_base = expect.get("base")
    if wanted_base and wanted_base in bases and api.base_model != wanted_base:
        failures.append(f"base {api.base_model!r} != {wanted_base!r}")
    aspect = expect.get("aspect")
    shape = "square" if api.width == api.height else "landscape"
    shape = "portrait" if api.height > api.width else shape
    if aspect and aspect != shape:
        failures.append(f"{api.width}x{api.height} is not {aspect}")
    if "loras" in expect and len(api.loras) != expect["loras"]:
        failures.append(f"{len(api.loras)} LoRAs != {expect['loras']}")
    if "min_loras" in expect and len(api.loras) < expect["min_loras"]:
        failures.append(f"{len(api.loras)} LoRAs < {expect['min_loras']}")
    if "max_loras" in expect and len(api.loras) > expect["max_loras"]:
        failures.append(f"{len(api.loras)} LoRAs > {expect['max_loras']}")
    return failures


def pass_rates(outcomes: list[ConversationOutcome]) -> dict[str, dict[str, int]]:
    """Per refinement type: conversations and turns, passed and total."""
    table: dict[str, dict[str, int]] = defaultdict(
        lambda: {"conversations": 0, "passed": 0, "turns": 0, "turns_passed": 0}
    )
    for outcome in outcomes:
        row = table[outcome.type]
        row["conversations"] += 1
        row["passed"] += int(outcome.passed)
        row["turns"] += len(outcome.turns)
        row["turns_passed"] += sum(1 for turn in outcome.turns if not turn.failures)
    return dict(table)
