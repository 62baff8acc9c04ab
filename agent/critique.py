"""Generate, critique, retry: below the configured score, or when asked, try the next candidates.

The turn's first images are attempt 1. When their unified score is below
`Settings.critique.min_score`, or the user asked to "try a few models", the next ranked cards are
generated and scored too, up to `max_attempts` and within `time_budget_s` (a retry starts only
when the time spent on retries plus their mean so far fits the budget). The best-scoring attempt
is kept. Every attempt is appended to the conversation state, so it survives a restart.
"""

from __future__ import annotations

from time import monotonic
from typing import Any

from langgraph.runtime import Runtime

from diffagent.agent.attempts import attempt_record, generate_images, score_images
from diffagent.agent.card_api import card_api
from diffagent.agent.compose import compose
from diffagent.agent.context import AgentContext
from diffagent.agent.nodes import retrieve, validate_plan
from diffagent.agent.respond import explain
from diffagent.agent.state import State
from diffagent.agent.understand import Constraints
from diffagent.cards import ModelCard

__all__ = ["critique_node", "monotonic", "try_card"]


def critique_node(state: State, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    """Record this turn's images as an attempt; retry other cards when needed; keep the best."""
    ctx = runtime.context
    settings = ctx.settings.critique
    assert state.api is not None
    if not state.images:  # "try a few models" where no images can be made
        names = ", ".join(card.name for card in _next_cards(ctx, state)[:3]) or "none"
        note = (
            "Trying models needs images: configure a model store "
            f"(DIFFAGENT_GENERATION__MODEL_STORE). The next candidates are: {names}."
        )
        return {"notes": [*state.notes, note]}
    turn = sum(1 for message in state.messages if message["role"] == "user")
    attempts = [attempt_record(turn, state.api, state.images, state.scores, None)]
    attempts[0] |= {"composition": state.composition, "scores": state.scores}
    score = state.scores.get("unified") if state.scores else None
    below = settings.min_score is not None and score is not None and score < settings.min_score
    if not (state.explore or below):
        attempts[0]["kept"] = True
        return {"attempts": attempts}
    notes = list(state.notes)
    if ctx.scorer is None or ctx.generator is None or score is None:
        attempts[0]["kept"] = True
        notes.append("Comparing models needs images and scores (a model store and scorer weights).")
        return {"attempts": attempts, "notes": notes}
    cons = Constraints.model_validate(state.constraints)
    queue = [card.version_id for card in _next_cards(ctx, state)]
    start, spent = monotonic(), list[float]()
    for version_id in queue:
        if len(attempts) >= settings.max_attempts:
            break
        estimate = sum(spent) / len(spent) if spent else 0.0
        if monotonic() - start + estimate > settings.time_budget_s:
            notes.append(
                f"I stopped after {len(attempts)} attempts: the time budget is "
                f"{settings.time_budget_s:g} s."
            )
            break
        began = monotonic()
        attempt = try_card(ctx, cons, version_id, turn)
        spent.append(monotonic() - began)
        attempt["seconds"] = round(spent[-1], 3)
        attempts.append(attempt)
    scored = [i for i, a in enumerate(attempts) if a["unified"] is not None]
    best = max(scored, key=lambda i: attempts[i]["unified"])
    attempts[best]["kept"] = True
    reason = "a score below the threshold" if below and not state.explore else "your request"
    notes.append(
        f"Tried {len(attempts)} models for {reason}; kept {attempts[best]['model']} "
        f"(unified {attempts[best]['unified']:.3f})."
    )
    update: dict[str, Any] = {"attempts": attempts, "notes": notes}
    if best != 0:
        kept = attempts[best]
        card = ctx.catalog.get(int(kept["version_id"]))
        update.update(
            api=kept["api"],
            last_api=kept["api"],
            images=kept["images"],
            scores=kept["scores"],
            composition=kept["composition"],
            ranking=[kept["version_id"], *(v for v in state.ranking if v != kept["version_id"])],
        )
        if card is not None:
            update["why"] = explain(card, cons, "it scored best of the models I tried")
    return update


def _next_cards(ctx: AgentContext, state: State) -> list[ModelCard]:
    """The cards ranked after this turn's, best first (retrieved again on a kept turn)."""
    assert state.api is not None
    chosen = state.api["version_id"]
    ranked = [v for v in state.ranking or state.candidates if v != chosen]
    if ranked:
        return [card for v in ranked if (card := ctx.catalog.get(v)) is not None]
    cons = Constraints.model_validate(state.constraints)
    return [card for card in retrieve(ctx, cons) if card.version_id != chosen]


def try_card(ctx: AgentContext, cons: Constraints, version_id: int, turn: int) -> dict[str, Any]:
    """One attempt with another card: its API (validated, composed), images and scores."""
    card = ctx.catalog.get(version_id)
    api: dict[str, Any] = {"version_id": version_id, "model": card.name if card else "?"}
    if card is None:
        return attempt_record(turn, api, [], None, None, error="not in the catalog") | {
            "scores": None,
            "composition": [],
        }
    plan = card_api(card, cons).model_dump(mode="json")
    checked = validate_plan(ctx, cons, plan, "", None, [version_id])
    if checked.get("api") is None:
        error = "; ".join(checked.get("notes", [])) or "invalid"
        return attempt_record(turn, plan, [], None, None, error=error) | {
            "scores": None,
            "composition": [],
        }
    api, composition, _ = compose(ctx, cons, checked["api"])
    images, error = generate_images(ctx, api)
    scores = score_images(ctx, api, images) if images else None
    record = attempt_record(turn, api, images, scores, None, error=error)
    return record | {"scores": scores, "composition": composition}
