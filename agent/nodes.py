"""Graph nodes: understand, retrieve, plan, validate, compose, generate, score and respond."""

from __future__ import annotations

from typing import Any

from langgraph.runtime import Runtime

from diffagent.agent import planner
from diffagent.agent.attempts import generate_images, score_images
from diffagent.agent.card_api import card_api
from diffagent.agent.card_evidence import (
    conflicting_media,
    is_adult,
    is_character,
    named_in,
    style_fit,
)
from diffagent.agent.compose import compose
from diffagent.agent.context import AgentContext
from diffagent.agent.respond import compose_reply, explain
from diffagent.agent.state import State
from diffagent.agent.understand import Constraints, Understanding, understand
from diffagent.agent.understand_llm import understand_with_llm
from diffagent.agent.understand_style import MEDIA, find_styles
from diffagent.agent.validate import Repair, validate_and_repair
from diffagent.cards import ModelCard


def understand_node(state: State, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    """Merge the newest user message into the conversation's constraints; reset turn fields."""
    message = next((m["content"] for m in reversed(state.messages) if m["role"] == "user"), "")
    previous = Constraints.model_validate(state.constraints) if state.constraints else None
    allow_nsfw = runtime.context.settings.allow_nsfw
    if state.request is not None:
        result = _understand_request(state.request)
        result.constraints.allow_adult = allow_nsfw
    elif runtime.context.settings.planner.understanding == "llm" and runtime.context.backend:
        result = understand_with_llm(
            message,
            previous,
            runtime.context.backend,
            current_api=state.last_api,
            allow_nsfw=allow_nsfw,
            resolve_name=lambda name: resolve_card_name(runtime.context, name),
        )
    else:
        result = understand(
            message,
            previous,
            current_api=state.last_api,
            allow_nsfw=allow_nsfw,
            resolve_name=lambda name: resolve_card_name(runtime.context, name),
        )
    if not _check_pin(result.constraints, runtime.context, result.notes):
        # An unusable pick changes nothing: the conversation keeps its model and constraints.
        result.constraints.pin_version_id = previous.pin_version_id if previous else None
        result.replan, result.changes = False, []
    _keep_feasible(result.constraints, previous, runtime.context, result.notes)
    if previous is not None and result.constraints == previous:
        result.replan = False  # nothing that bears on the choice changed after all
    return {
        "request": None,
        "one_shot": state.request is not None,
        "intent": result.intent,
        "constraints": result.constraints.model_dump(mode="json"),
        "replan": result.replan or result.explore or state.last_api is None,
        "changes": result.changes,
        "notes": result.notes,
        "candidates": [],
        "candidate_scores": [],
        "plan": None,
        "plan_raw": "",
        "plan_error": None,
        "plan_source": "",
        "reason": "",
        "ranking": [],
        "why": "",
        "api": None,
        "repairs": [],
        "hallucinated": False,
        "images": [],
        "scores": None,
        "composition": [],
        "explore": result.explore,
        "reply": "",
    }


def _understand_request(request: dict[str, str]) -> Understanding:
    """A one-shot request taken as is: its prompt and negative prompt are the constraints."""
    cons = Constraints(
        prompt=request.get("prompt", "").strip(),
        negative_prompt=request.get("negative_prompt", "").strip(),
    )
    intent = "image" if cons.prompt else "empty"
    return Understanding(intent=intent, constraints=cons, replan=True, changes=["new prompt"])


def resolve_card_name(ctx: AgentContext, name: str) -> int | None:
    """The version id of the catalog card named `name` (its most downloaded version), or None."""
    cards = ctx.catalog.by_name(name)
    return max(cards, key=lambda c: c.stats.downloads).version_id if cards else None


def _check_pin(cons: Constraints, ctx: AgentContext, notes: list[str]) -> bool:
    """False for a pick the catalog lacks or may not use; loosen the constraints a pick breaks."""
    if cons.pin_version_id is None:
        return True
    card = ctx.catalog.get(cons.pin_version_id)
    if card is None:
        notes.append(f"The catalog has no version {cons.pin_version_id}; I kept the model.")
        return False
    if is_adult(card) and not cons.allow_adult:
        notes.append(f"{card.display_name} is an adult-oriented model; I kept the model.")
        return False
    if cons.base_model not in (None, card.base_model):
        notes.append(f"{card.display_name} is {card.base_model}: any base model is allowed now.")
        cons.base_model = None
    if (cons.model_type not in (None, card.type)) or (cons.no_lora and card.type == "LORA"):
        notes.append(f"{card.display_name} is a {card.type}: any type is allowed now.")
        cons.model_type = None
        cons.no_lora = False
    return True


def _keep_feasible(
    cons: Constraints, previous: Constraints | None, ctx: AgentContext, notes: list[str]
) -> None:
    """Undo a base-model or type constraint that no catalog card meets, with a note."""
    bases = sorted({card.base_model for card in ctx.catalog})
    if cons.base_model is not None and cons.base_model not in bases:
        kept = previous.base_model if previous else None
        notes.append(
            f"The catalog has no {cons.base_model} model (it has {', '.join(bases) or 'none'}); "
            f"I kept {kept or 'any base model'}."
        )
        cons.base_model = kept
    types = {card.type for card in ctx.catalog if cons.base_model in (None, card.base_model)}
    if cons.model_type is not None and cons.model_type not in types:
        notes.append(f"The catalog has no {cons.model_type} for this base model; any type is used.")
        cons.model_type = None
        cons.no_lora = False


def route_after_understand(state: State) -> str:
    """Answer at once when no image is asked for; skip retrieval when the model is kept."""
    if state.intent != "image":
        return "respond"
    return "retrieve" if state.replan else "plan"


def retrieve_node(state: State, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    """Retrieve the top-K cards for the prompt within the conversation's constraints.

    When the user asked for another model and no other card fits the whole request, the last
    model is kept and the user is told so.
    """
    ctx = runtime.context
    cons = Constraints.model_validate(state.constraints)
    cards, scores = retrieve_scored(ctx, cons, one_shot=state.one_shot)
    if not cards and cons.exclude_version_ids and state.last_api is not None:
        kept = int(state.last_api["version_id"])
        cons.exclude_version_ids = [v for v in cons.exclude_version_ids if v != kept]
        note = (
            f"No other model fits the whole request (style, base model, type and the models you "
            f"moved away from); I kept {state.last_api['model']}."
        )
        return {
            "candidates": [],
            "candidate_scores": [],
            "replan": False,
            "constraints": cons.model_dump(mode="json"),
            "notes": [*state.notes, note],
        }
    return {"candidates": [card.version_id for card in cards], "candidate_scores": scores}


def retrieve(ctx: AgentContext, cons: Constraints, *, one_shot: bool = False) -> list[ModelCard]:
    """The top-K allowed cards for the constraints' query, best first (see retrieve_scored)."""
    return retrieve_scored(ctx, cons, one_shot=one_shot)[0]


def retrieve_scored(
    ctx: AgentContext, cons: Constraints, *, one_shot: bool = False
) -> tuple[list[ModelCard], list[float]]:
    """The top-K allowed cards for the constraints' query, best first, and their ranker scores.

    The scores are the learned ranker's for the query, one per card, given only when the index
    ranks with a ranker and the cards keep its order (no style reordering); else the list is
    empty. Rank mode fuses them with the planner's log-likelihood.

    Allowed: not excluded, not adult-oriented (unless NSFW is allowed), not a character or
    real-person LoRA the prompt does not name. When a medium is asked, cards whose evidence
    shows only another medium come last (after "another model": not at all); cards whose
    evidence shows the asked styles come first, each group in retrieval order. A picked card
    is the only one. A one-shot request (`select`) keeps the index's order, which measures
    best on held-out prompts: only adult cards and repeats of a model are left out.
    """
    if cons.pin_version_id is not None:
        pinned = ctx.catalog.get(cons.pin_version_id)
        return ([pinned] if pinned is not None else []), []
    excluded = set(cons.exclude_version_ids)
    # "Another model" moves away from the whole model, not to another version of it.
    excluded_models = {(card.model_id, card.name) for v in excluded if (card := ctx.catalog.get(v))}
    top_k = ctx.settings.index.top_k
    filters = {
        "base_model": cons.base_model,
        "model_type": cons.model_type or ("Checkpoint" if cons.no_lora else None),
    }
    hits = ctx.index.query(cons.query, k=3 * top_k + 3 * len(excluded), **filters)
    pool = [hit.card for hit in hits]
    score_of = {hit.card.version_id: float(hit.score) for hit in hits}
    styles = [] if one_shot else find_styles(cons.query)
    media = [style for style in styles if style in MEDIA]
    if media:
        # Cards of the asked medium the content query may rank too low to see.
        seen = {card.version_id for card in pool}
        extra = ctx.index.query(", ".join(media) + " style", k=3 * top_k, **filters)
        pool += [hit.card for hit in extra if hit.card.version_id not in seen]
    allowed = [
        card
        for card in pool
        if card.version_id not in excluded
        and (card.model_id, card.name) not in excluded_models
        and (cons.allow_adult or not is_adult(card))
        and (one_shot or not is_character(card) or named_in(card, cons.query))
    ]
    # One version per model: alternatives and "another model" are other models.
    first_versions: dict[tuple[int, str], ModelCard] = {}
    for card in allowed:
        first_versions.setdefault((card.model_id, card.name), card)
    allowed = list(first_versions.values())
    fitting = [card for card in allowed if not conflicting_media(card, styles)]
    if excluded:
        allowed = fitting  # "another model" must still fit; an empty list is said so
    else:
        fit_ids = {card.version_id for card in fitting}
        allowed = fitting + [card for card in allowed if card.version_id not in fit_ids]
    if styles:
        # A stable sort: style-fitting cards first, each group in retrieval order.
        allowed.sort(key=lambda card: style_fit(card, styles) < 2.0)
    top = allowed[:top_k]
    fuse = ctx.index.ranker_scores and not styles
    return top, [score_of[card.version_id] for card in top] if fuse else []


def plan_node(state: State, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    """Choose the API: keep the last model on a parameter-only refinement, else plan afresh."""
    ctx = runtime.context
    cons = Constraints.model_validate(state.constraints)
    if not state.replan and state.last_api is not None:
        return {
            "plan": state.last_api,
            "plan_source": "kept",
            "why": f"Kept {state.last_api['model']}: this message changed only "
            f"{', '.join(state.changes) or 'details'}.",
        }
    cards = [card for vid in state.candidates if (card := ctx.catalog.get(vid)) is not None]
    if not cards:
        return {"plan": None, "plan_error": "no catalog card meets the constraints"}
    if cons.pin_version_id is not None and cards[0].version_id == cons.pin_version_id:
        return {
            "plan": card_api(cards[0], cons).model_dump(mode="json"),
            "plan_source": "index",
            "reason": "you picked it",
            "ranking": [cards[0].version_id],
        }
    scores = state.candidate_scores if len(state.candidate_scores) == len(cards) else None
    return plan_with(ctx, cons, cards, scores)


def plan_with(
    ctx: AgentContext,
    cons: Constraints,
    cards: list[ModelCard],
    ranker_scores: list[float] | None = None,
) -> dict[str, Any]:
    """Run the configured planner over the candidate cards: state updates (plan, reason, ...).

    `ranker_scores` (the learned ranker's, one per card) are fused with the planner's
    log-likelihood in rank mode; without them the retrieval rank is the prior.
    """
    ranking = [card.version_id for card in cards]
    if ctx.settings.planner.mode == "retrieval" or ctx.backend is None:
        return {
            "plan": card_api(cards[0], cons).model_dump(mode="json"),
            "plan_source": "index",
            "reason": "it is the index's best match",
            "ranking": ranking,
        }
    try:
        if ctx.settings.planner.mode == "rank":
            scored = ctx.settings.planner.rank_candidates
            ranked = planner.plan_rank(
                ctx.backend,
                cons.query,
                cons.negative_prompt,
                cards[:scored],
                retrieval_weight=ctx.settings.planner.rank_prior,
                constraints=cons,
                ranker_scores=ranker_scores[:scored] if ranker_scores else None,
                llm_weight=ctx.settings.planner.llm_weight,
            )
            best = ranked.options[0]
            return {
                "plan": best.api.model_dump(mode="json"),
                "plan_source": "planner",
                "reason": f"the planner ranked it first of {len(ranked.options)} options "
                f"(log-likelihood {best.logprob:.2f}, retrieval rank {best.retrieval_rank + 1})",
                "ranking": [card.version_id for card in ranked.cards()]
                + [card.version_id for card in cards[scored:]],
            }
        generated = planner.plan_generate(ctx.backend, cons.query, cons.negative_prompt, cards)
    except Exception as error:  # noqa: BLE001 - a broken planner must not end the conversation
        return {
            "plan": card_api(cards[0], cons).model_dump(mode="json"),
            "plan_source": "index",
            "plan_error": f"planner failed ({type(error).__name__}: {error}); "
            "used the index's top card",
            "reason": "it is the index's best match (the planner failed)",
            "ranking": ranking,
        }
    if generated.api is None:
        return {
            "plan": None,
            "plan_raw": generated.raw_text,
            "plan_error": generated.error or "planner output is not a JSON object",
            "ranking": ranking,
        }
    return {
        "plan": generated.api,
        "plan_source": "planner",
        "plan_raw": generated.raw_text,
        "reason": f"the planner wrote this API from {len(cards)} retrieved cards",
        "ranking": ranking,
    }


def validate_node(state: State, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    """Validate and repair the plan against the catalog; record repairs and hallucination."""
    ctx = runtime.context
    cons = Constraints.model_validate(state.constraints)
    update = validate_plan(
        ctx, cons, state.plan, state.plan_raw, state.plan_error, state.candidates
    )
    if "notes" in update:
        update["notes"] = [*state.notes, *update["notes"]]
    api = update.get("api")
    card = ctx.catalog.get(api["version_id"]) if api else None
    if card is not None and state.plan_source != "kept":
        reason = state.reason or "it is the index's best match (the planner's output was unusable)"
        update["why"] = explain(card, cons, reason)
    if card is not None and state.ranking:
        update["ranking"] = [card.version_id, *(v for v in state.ranking if v != card.version_id)]
    return update


def validate_plan(
    ctx: AgentContext,
    cons: Constraints,
    plan: dict[str, Any] | None,
    plan_raw: str,
    plan_error: str | None,
    candidates: list[int],
) -> dict[str, Any]:
    """Validation as state updates; a plan that could not be parsed falls back to the top card."""
    repairs: list[Repair] = []
    try:
        if plan is None:
            top = next((c for v in candidates if (c := ctx.catalog.get(v)) is not None), None)
            if top is None:
                raise ValueError(plan_error or "no catalog card meets the constraints")
            repairs.append(
                Repair(
                    field="api",
                    before=plan_raw[:200] or None,
                    after=top.display_name,
                    reason=f"{plan_error or 'no plan'}; used the index's top card",
                )
            )
            plan = card_api(top, cons).model_dump(mode="json")
        result = validate_and_repair(plan, ctx.catalog, ctx.index, cons)
    except ValueError as error:
        return {"api": None, "notes": [f"I could not choose a model: {error}."]}
    api = result.api.model_dump(mode="json")
    return {
        "api": api,
        "last_api": api,
        "repairs": [r.model_dump() for r in [*repairs, *result.repairs]],
        "hallucinated": result.hallucinated,
    }


def compose_node(state: State, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    """Compose the validated API with LoRAs, one per concept of the prompt (agent/compose.py).

    One-shot requests (batch selection) are not composed: they measure the model choice.
    """
    if state.api is None or state.one_shot:
        return {}
    cons = Constraints.model_validate(state.constraints)
    api, composition, notes = compose(runtime.context, cons, state.api)
    update: dict[str, Any] = {"api": api, "last_api": api, "composition": composition}
    if notes:
        update["notes"] = [*state.notes, *notes]
    return update


def route_after_compose(state: State, runtime: Runtime[AgentContext]) -> str:
    """Generate when a generator is configured; "try a few models" without one: critique says so."""
    if state.api is None:
        return "respond"
    if runtime.context.generator is not None:
        return "generate"
    return "critique" if state.explore else "respond"


def generate_node(state: State, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    """Generate k images with the validated API; missing weights become a note, not a crash."""
    assert state.api is not None
    paths, error = generate_images(runtime.context, state.api)
    if error is not None:
        return {"notes": [*state.notes, error]}
    return {"images": paths}


def route_after_generate(state: State, runtime: Runtime[AgentContext]) -> str:
    """Score when a scorer is configured; critique (record the attempt) when images were made."""
    if not state.images:
        return "respond"
    return "score" if runtime.context.scorer is not None else "critique"


def score_node(state: State, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    """Score this turn's images for the prompt."""
    assert state.api is not None
    return {"scores": score_images(runtime.context, state.api, state.images)}


def respond_node(state: State) -> dict[str, Any]:
    """Write the markdown answer of this turn and append it to the conversation."""
    reply = compose_reply(state)
    return {"reply": reply, "messages": [{"role": "assistant", "content": reply}]}
