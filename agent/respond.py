"""Presentation: the one renderer of a turn's answer, used by every interface.

Text that came from the planner (unknown fields, unusable output) is untrusted: replies name the
field only and never echo it. Interfaces show `TurnResult.reply` and may add side panels built
from the typed result, never another rendering of repairs or scores.
"""

from __future__ import annotations

import re
from typing import Any

from diffagent.agent.attempts import attempts_table
from diffagent.agent.state import State
from diffagent.agent.understand import Constraints
from diffagent.agent.validate import UNKNOWN_PARAMETER
from diffagent.cards import ModelCard

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


def compose_reply(state: State) -> str:
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
    if state.composition:
        lines.append(f"Composition: {describe_composition(api, state.composition)}")
    elif api.get("loras"):
        loras = ", ".join(f"{lo['name']} ({lo['weight']:g})" for lo in api["loras"])
        lines.append(f"LoRAs: {loras}")
    lines.append(f"Prompt: {_clip(api['prompt'])}")
    if api.get("negative_prompt"):
        lines.append(f"Negative prompt: {_clip(api['negative_prompt'])}")
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
    turn = sum(1 for message in state.messages if message["role"] == "user")
    tried = [attempt for attempt in state.attempts if attempt.get("turn") == turn]
    if len(tried) > 1:
        lines.append("Tried:\n\n" + attempts_table(tried))
    return "\n\n".join([*notes, *lines])


def describe_composition(api: dict[str, Any], composition: list[dict[str, Any]]) -> str:
    """The checkpoint plus each LoRA with its weight and the concept it is for, in one line."""
    checkpoint = api["checkpoint"]["name"] if api.get("checkpoint") else api["model"]
    parts = [f"{checkpoint} (checkpoint)"]
    for item in composition:
        concept = "the chosen model" if item["own"] else f"'{_clip(item['concept'], 40)}'"
        parts.append(f"{item['name']} at {item['weight']:g} for {concept} ({item['role']})")
    total = sum(item["weight"] for item in composition)
    return " + ".join(parts) + f"; total LoRA weight {total:g}"


def _clip(text: str, limit: int = 300) -> str:
    """`text` cut at a word boundary within `limit` characters, with '…' when cut."""
    if len(text) <= limit:
        return text
    return text[:limit].rsplit(" ", 1)[0].rstrip(" ,;") + "…"


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
