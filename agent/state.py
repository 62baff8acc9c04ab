"""Graph state: the narrow input a turn brings and the full state a conversation keeps."""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Annotated, Any


@dataclass
class InputState:
    """What one turn brings in: the new user message (appended to the conversation)."""

    messages: Annotated[list[dict[str, str]], operator.add] = field(default_factory=list)
    """The conversation, {"role": "user"|"assistant", "content": str} dicts; a turn adds one."""
    request: dict[str, str] | None = None
    """A one-shot request {"prompt", "negative_prompt"} (batch selection): it becomes the
    constraints as is, without reading the message for refinements, questions or declines."""


@dataclass
class State(InputState):
    """The whole state of one conversation, persisted by the checkpointer after every turn.

    Values are plain JSON (dicts, lists, strings) so any checkpointer can store them.
    """

    constraints: dict[str, Any] = field(default_factory=dict)
    """The merged Constraints (understand.Constraints) the conversation has asked for so far."""
    one_shot: bool = False
    """Whether this turn is a one-shot request (batch selection) rather than a chat message."""
    intent: str = "image"
    """What the last message asks for: image, question, nsfw or empty."""
    replan: bool = True
    """Whether this turn chooses the model again (else the last card is kept)."""
    changes: list[str] = field(default_factory=list)
    """What the last message changed, in words."""
    notes: list[str] = field(default_factory=list)
    """Things to tell the user about this turn (truncation, missing weights)."""
    candidates: list[int] = field(default_factory=list)
    """Version ids of the retrieved cards, best first."""
    candidate_scores: list[float] = field(default_factory=list)
    """The learned ranker's score of each candidate (empty when the index has no ranker)."""
    plan: dict[str, Any] | None = None
    """The planner's API before validation (parsed JSON, may be wrong)."""
    plan_raw: str = ""
    """The planner's raw text (generate mode), for inspection."""
    plan_error: str | None = None
    """Why the planner's output could not be used, when it could not."""
    plan_source: str = ""
    """Where the plan came from: "planner", "index" (top card), "kept" (last API), or ""."""
    reason: str = ""
    """Why the planner chose its card, as a phrase; validation explains the final card with it."""
    ranking: list[int] = field(default_factory=list)
    """Version ids of the candidates in the planner's order, the chosen card first."""
    why: str = ""
    """Why the card was chosen, in words."""
    api: dict[str, Any] | None = None
    """The validated T2IApi of this turn (None when no image was asked for)."""
    last_api: dict[str, Any] | None = None
    """The last validated API of the conversation; refinements start from it."""
    repairs: list[dict[str, Any]] = field(default_factory=list)
    """The repairs validation made this turn (field, before, after, reason)."""
    hallucinated: bool = False
    """Whether this turn's plan named a model matching no catalog card."""
    images: list[str] = field(default_factory=list)
    """Paths of the images generated this turn."""
    scores: dict[str, Any] | None = None
    """The score report of this turn's images."""
    composition: list[dict[str, Any]] = field(default_factory=list)
    """This turn's LoRAs: version_id, name, weight, the concept each is for, role, own."""
    explore: bool = False
    """Whether this turn tries several candidate models ('try a few models')."""
    attempts: Annotated[list[dict[str, Any]], operator.add] = field(default_factory=list)
    """Every generation attempt of the conversation (turn, card, parameters, scores, images);
    a node returns only its new attempts."""
    reply: str = ""
    """The markdown answer of this turn."""
