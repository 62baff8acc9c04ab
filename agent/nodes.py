"""Graph nodes: understand, retrieve, plan, validate, generate, score and respond."""

from __future__ import annotations

import json
import math
import re
import uuid
from typing import Any

from langgraph.runtime import Runtime

from diffagent.agent import planner
from diffagent.agent.context import AgentContext
from diffagent.agent.state import State
from diffagent.agent.understand import Constraints, understand
from diffagent.agent.validate import (
    UNKNOWN_PARAMETER,
    Repair,
    api_from_card,
    validate_and_repair,
)
from diffagent.index.cards import ModelCard
from diffagent.paths import user_data_dir
from diffagent.tools.api import T2IApi

_GLOSSARY: dict[str, str] = {
    r"\bcfg\b|guidance": (
        "**CFG scale** (classifier-free guidance) sets how strongly the image follows the prompt: "
        "low values (3-5) are looser and more varied, 7 is the usual default, high values (12+) "
        "follow the prompt literally but can look over-saturated."
    ),
    r"\bsampler|sampling method": (
        "A **sampler** is the numerical method that turns noise into an image step by step. "
        "'Euler a' is fast and varied; 'DPM++ 2M Karras' gives clean results in 20-30 steps."
    ),
    r"\bsteps?\b": (
        "**Sampling steps** are how many denoising passes the sampler makes: more steps cost "
        "time linearly; 20-30 is enough for most samplers."
    ),
    r"\blora": (
        "A **LoRA** is a small add-on trained on top of a checkpoint to teach a style, character "
        "or concept; it is applied with a weight (typically 0.6-1.0) and needs a base checkpoint "
        "of the same base model."
    ),
    r"\bcheckpoint": (
        "A **checkpoint** is a complete Stable Diffusion model (all weights); community "
        "checkpoints are fine-tunes of SD 1.5 or SDXL with their own look."
    ),
    r"\bsdxl\b|\bsd ?1\.?5\b|base model": (
        "**SD 1.5** works at 512 px and has the largest community catalog; **SDXL 1.0** works "
        "at 1024 px, follows prompts better and is slower. LoRAs only work on their own base."
    ),
    r"clip skip": (
        "**CLIP skip** uses an earlier layer of the text encoder; 2 is common for anime models."
    ),
    r"negative prompt": (
        "A **negative prompt** lists what the image should not show (e.g. 'blurry, extra fingers')."
    ),
}


def understand_node(state: State, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    """Merge the newest user message into the conversation's constraints; reset turn fields."""
    message = next((m["content"] for m in reversed(state.messages) if m["role"] == "user"), "")
    previous = Constraints.model_validate(state.constraints) if state.constraints else None
    result = understand(
        message, previous, current_api=state.last_api, allow_nsfw=runtime.context.allow_nsfw
    )
    _keep_feasible(result.constraints, previous, runtime.context, result.notes)
    if previous is not None and result.constraints == previous:
        result.replan = False  # nothing that bears on the choice changed after all
    return {
        "intent": result.intent,
        "constraints": result.constraints.model_dump(mode="json"),
        "replan": result.replan or state.last_api is None,
        "changes": result.changes,
        "notes": result.notes,
        "candidates": [],
        "plan": None,
        "plan_raw": "",
        "plan_error": None,
        "why": "",
        "api": None,
        "repairs": [],
        "hallucinated": False,
        "images": [],
        "scores": None,
        "reply": "",
    }


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
    """Retrieve the top-K cards for the prompt within the conversation's constraints."""
    ctx = runtime.context
    cons = Constraints.model_validate(state.constraints)
    cards = retrieve(ctx, cons)
    return {"candidates": [card.version_id for card in cards]}


def retrieve(ctx: AgentContext, cons: Constraints) -> list[ModelCard]:
    """The top-K allowed cards for the constraints' query, best first."""
    excluded = set(cons.exclude_version_ids)
    hits = ctx.index.query(
        cons.query,
        k=ctx.top_k + len(excluded),
        base_model=cons.base_model,
        model_type=cons.model_type or ("Checkpoint" if cons.no_lora else None),
    )
    return [hit.card for hit in hits if hit.card.version_id not in excluded][: ctx.top_k]


def plan_node(state: State, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    """Choose the API: keep the last model on a parameter-only refinement, else plan afresh."""
    ctx = runtime.context
    cons = Constraints.model_validate(state.constraints)
    if not state.replan and state.last_api is not None:
        return {
            "plan": state.last_api,
            "why": f"Kept {state.last_api['model']}: this message changed only "
            f"{', '.join(state.changes) or 'details'}.",
        }
    cards = [card for vid in state.candidates if (card := ctx.catalog.get(vid)) is not None]
    if not cards:
        return {"plan": None, "plan_error": "no catalog card meets the constraints"}
    update = plan_with(ctx, cons, cards)
    update.pop("ranking", None)  # select() reads it; the state does not keep it
    return update


def plan_with(ctx: AgentContext, cons: Constraints, cards: list[ModelCard]) -> dict[str, Any]:
    """Run the configured planner over the candidate cards; state updates (plan, why, errors)."""
    if ctx.mode == "retrieval" or ctx.backend is None:
        card = cards[0]
        return {
            "plan": api_from_card(card, cons).model_dump(mode="json"),
            "why": explain(card, cons, "it is the index's best match"),
        }
    try:
        if ctx.mode == "rank":
            ranked = planner.plan_rank(ctx.backend, cons.query, cons.negative_prompt, cards)
            options = sorted(
                ranked.options,
                key=lambda o: -(o.logprob - ctx.rank_prior * math.log1p(o.retrieval_rank)),
            )
            best = options[0]
            ranking = [option.card.version_id for option in options]
            return {
                "ranking": list(dict.fromkeys(ranking)),
                "plan": best.api.model_dump(mode="json"),
                "why": explain(
                    best.card,
                    cons,
                    f"the planner ranked it first of {len(options)} options "
                    f"(log-likelihood {best.logprob:.2f}, "
                    f"retrieval rank {best.retrieval_rank + 1})",
                ),
            }
        generated = planner.plan_generate(ctx.backend, cons.query, cons.negative_prompt, cards)
    except Exception as error:  # noqa: BLE001 - a broken planner must not end the conversation
        return {
            "plan": api_from_card(cards[0], cons).model_dump(mode="json"),
            "plan_error": f"planner failed ({type(error).__name__}: {error}); "
            "used the index's top card",
            "why": explain(cards[0], cons, "it is the index's best match (the planner failed)"),
        }
    if generated.api is None:
        return {
            "plan": None,
            "plan_raw": generated.raw_text,
            "plan_error": generated.error or "planner output is not a JSON object",
        }
    return {
        "plan": generated.api,
        "plan_raw": generated.raw_text,
        "why": f"the planner wrote this API from {len(cards)} retrieved cards",
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
    if card is not None and not state.why.startswith(("It fits", "Kept")):
        reason = state.why or "it is the index's best match (the planner's output was unusable)"
        update["why"] = explain(card, cons, reason)
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
            plan = api_from_card(top, cons).model_dump(mode="json")
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


def route_after_validate(state: State, runtime: Runtime[AgentContext]) -> str:
    """Generate only when a generator is configured and there is an API."""
    return "generate" if runtime.context.generator is not None and state.api else "respond"


def generate_node(state: State, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    """Generate k images with the validated API; missing weights become a note, not a crash."""
    ctx = runtime.context
    assert ctx.generator is not None and state.api is not None
    api = T2IApi.model_validate(state.api)
    card = ctx.catalog.get(api.version_id or -1)
    checkpoint = ctx.catalog.get(api.checkpoint.version_id) if api.checkpoint else card
    loras = [c for lo in api.loras if (c := ctx.catalog.get(lo.version_id)) is not None]
    if checkpoint is None:
        return {"notes": [*state.notes, "No checkpoint to generate with."]}
    seeds = ctx.seeds or [api.seed if api.seed is not None else 0]
    try:
        images = ctx.generator.generate(api, seeds, checkpoint, loras)
    except (FileNotFoundError, ValueError) as error:
        return {"notes": [*state.notes, f"No images: {error}"]}
    out_dir = ctx.output_dir or user_data_dir() / "images"
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = uuid.uuid4().hex[:12]
    paths = []
    for seed, image in zip(seeds, images, strict=False):
        path = out_dir / f"{stem}-{seed}.png"
        image.save(path)
        paths.append(str(path))
    return {"images": paths}


def route_after_generate(state: State, runtime: Runtime[AgentContext]) -> str:
    """Score when a scorer is configured and images were made."""
    return "score" if runtime.context.scorer is not None and state.images else "respond"


def score_node(state: State, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    """Score this turn's images for the prompt."""
    from PIL import Image  # noqa: PLC0415

    ctx = runtime.context
    assert ctx.scorer is not None and state.api is not None
    images = [Image.open(path).convert("RGB") for path in state.images]
    # The API is part of the cache key: the same prompt and seed under another API is another image.
    api_key = json.dumps(state.api, sort_keys=True)
    report = ctx.scorer.score(state.api["prompt"], images, api_key=api_key, seeds=ctx.seeds)
    scores = report.model_dump(mode="json") if hasattr(report, "model_dump") else dict(report)
    return {"scores": scores}


def respond_node(state: State, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    """Write the markdown answer of this turn and append it to the conversation."""
    ctx = runtime.context
    reply = compose_reply(state, ctx)
    return {"reply": reply, "messages": [{"role": "assistant", "content": reply}]}


def compose_reply(state: State, ctx: AgentContext) -> str:
    """The answer for the user: the card, why, parameters, repairs and notes (markdown)."""
    notes = [f"_{note}_" for note in state.notes]
    if state.intent == "empty":
        return "\n\n".join([*notes, "Describe the image you want and I will pick a model for it."])
    if state.intent == "nsfw":
        return "\n\n".join(
            [*notes, "I can't help with explicit (NSFW) images. Describe another image?"]
        )
    if state.intent == "question":
        return "\n\n".join([*notes, answer_question(state)])
    if state.api is None:
        return "\n\n".join([*notes, "I could not choose a model for this request."])
    api = state.api
    lines = [
        f"**{api['model']}** ({api['type']}, {api['base_model']}, version {api['version_id']})"
    ]
    if state.why:
        lines.append(state.why)
    params = (
        f"{api['width']}x{api['height']}, {api['sampling_method']}, {api['sampling_steps']} steps, "
        f"CFG {api['cfg_scale']:g}"
    )
    if api.get("clip_skip"):
        params += f", clip skip {api['clip_skip']}"
    lines.append(f"Parameters: {params}")
    if api.get("checkpoint"):
        lines.append(f"Runs on checkpoint: {api['checkpoint']['name']}")
    if api.get("loras"):
        loras = ", ".join(f"{lo['name']} ({lo['weight']:g})" for lo in api["loras"])
        lines.append(f"LoRAs: {loras}")
    lines.append(f"Prompt: {api['prompt'][:300]}")
    if api.get("negative_prompt"):
        lines.append(f"Negative prompt: {api['negative_prompt'][:300]}")
    if state.changes and not state.replan:
        lines.append(f"Changed: {', '.join(state.changes)}")
    if state.repairs:
        # Values of unknown fields are untrusted planner text: the reply names the field only.
        fixes = "; ".join(_describe_repair(r) for r in state.repairs[:8])
        lines.append(f"Repaired: {fixes}")
    if state.images:
        lines.append("Images: " + ", ".join(state.images))
    if state.scores and "unified" in state.scores:
        lines.append(f"Unified score: {state.scores['unified']:.3f}")
    return "\n\n".join([*notes, *lines])


def _describe_repair(repair: dict[str, Any]) -> str:
    """One repair for the reply; raw planner text (unknown fields, bad output) is not echoed."""
    if repair["reason"] == UNKNOWN_PARAMETER:
        return f"{repair['field']} ({UNKNOWN_PARAMETER})"
    if repair["field"] == "api":
        return f"planner output unusable -> {repair['after']} (the index's top card)"
    return f"{repair['field']}: {repair['before']} -> {repair['after']} ({repair['reason']})"


def answer_question(state: State) -> str:
    """Answer a question that asks for no image (glossary of generation terms, or the last pick)."""
    question = next((m["content"] for m in reversed(state.messages) if m["role"] == "user"), "")
    if re.search(r"\bwhy\b", question, re.I) and state.last_api:
        return (
            f"I picked **{state.last_api['model']}** because it matched your description best "
            "among the catalog's cards; ask for 'another model' to see a different one."
        )
    answers = [text for pattern, text in _GLOSSARY.items() if re.search(pattern, question, re.I)]
    if answers:
        return "\n\n".join(answers)
    return (
        "I pick a Stable Diffusion model (checkpoint or LoRA) and its parameters for an image you "
        "describe. Describe an image, or ask about CFG, samplers, steps, LoRAs or base models."
    )


_STOPWORDS = {"the", "and", "with", "for", "from", "into", "its", "his", "her", "very", "best"}


def _content_words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z0-9]+", text.lower()) if len(w) > 2} - _STOPWORDS


def explain(card: ModelCard, cons: Constraints, reason: str) -> str:
    """Why a card fits: the planner's reason plus the prompt terms its card shares."""
    words = _content_words(cons.query)
    terms = [t for t in [*card.trigger_words, *card.tags, *card.keywords] if t]
    shared = [t for t in dict.fromkeys(terms) if _content_words(t) & words]
    text = f"It fits because {reason}"
    if shared:
        text += f"; its card shares your terms: {', '.join(shared[:6])}"
    stats = card.stats
    if stats.downloads:
        text += f"; {stats.downloads:,} downloads"
        if stats.rating_count:
            text += f", rated {stats.rating:.1f}/5"
    return text + "."
