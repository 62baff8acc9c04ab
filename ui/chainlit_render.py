"""What the Chainlit app shows for a turn: the answer card, files, side panel and step notes."""

from __future__ import annotations

from typing import Any

import chainlit as cl

from diffagent.agent.service import TurnResult
from diffagent.api import T2IApi
from diffagent.cards import ModelCard

CIVITAI_VERSION_URL = "https://civitai.com/models/{model_id}?modelVersionId={version_id}"
EXPORT_FILES = {"comfyui": "workflow.json", "a1111": "txt2img.json", "diffusers": "generate.py"}
EXPORT_LANGUAGES = {"json": "json", "diffusers": "python", "a1111": "json", "comfyui": "json"}
EXPORT_TITLES = {
    "comfyui": "ComfyUI workflow (API format)",
    "a1111": "A1111 / Forge /sdapi/v1/txt2img payload",
    "diffusers": "diffusers script",
    "json": "T2I API JSON",
}
ANOTHER_MODEL_ACTION = "another_model"
NO_WEIGHTS_NOTE = (
    "No images: no model weights are configured. Point DiffAgent at your downloaded "
    "checkpoints and LoRAs with `DIFFAGENT_GENERATION__MODEL_STORE=/path/to/models` "
    "(or `--model-store DIR` on the command line) to generate and score images here."
)


def civitai_url(card: ModelCard) -> str:
    """The Civitai page of a card's model version."""
    return CIVITAI_VERSION_URL.format(model_id=card.model_id, version_id=card.version_id)


def _md(text: str) -> str:
    """Text safe inside a markdown table cell or link label."""
    return text.replace("|", "\\|").replace("[", "\\[").replace("]", "\\]").replace("\n", " ")


def card_markdown(card: ModelCard, api: T2IApi) -> str:
    """The answer card: linked name, type, base, rating, downloads, trigger words, parameters."""
    title = _md(f"{card.name} {card.version_name}".strip())
    stats = card.stats
    meta: list[str] = [card.type, card.base_model]
    if stats.rating_count:
        meta.append(f"★ {stats.rating:.1f} ({stats.rating_count:,})")
    meta.append(f"{stats.downloads:,} downloads")
    lines = [f"### [{title}]({civitai_url(card)})", " · ".join(meta)]
    if card.trigger_words:
        lines.append("Trigger words: " + " ".join(f"`{_md(w)}`" for w in card.trigger_words))
    rows = [
        ("size", f"{api.width} × {api.height}"),
        ("sampler", api.sampling_method),
        ("steps", str(api.sampling_steps)),
        ("CFG", f"{api.cfg_scale:g}"),
        ("seed", "random" if api.seed is None else str(api.seed)),
    ]
    if api.clip_skip:
        rows.append(("clip skip", str(api.clip_skip)))
    if api.checkpoint is not None:
        rows.append(("checkpoint", _md(api.checkpoint.name)))
    rows.append(
        ("LoRAs", ", ".join(f"{_md(lo.name)} ({lo.weight:g})" for lo in api.loras) or "none")
    )
    table = [
        "| " + " | ".join(k for k, _ in rows) + " |",
        "|" + "---|" * len(rows),
        "| " + " | ".join(v for _, v in rows) + " |",
    ]
    return "\n\n".join([*lines, "\n".join(table)])


def alternatives_markdown(alternatives: list[ModelCard]) -> str:
    """One line naming the next-ranked cards, linked to Civitai."""
    links = [f"[{_md(c.name)}]({civitai_url(c)}) ({c.type}, {c.base_model})" for c in alternatives]
    return "Alternatives: " + " · ".join(links)


def answer_content(result: TurnResult, *, note_no_weights: bool = False) -> str:
    """The message text: the card (when a model was chosen), then the agent's own reply."""
    parts = []
    if result.card is not None and result.api is not None:
        parts += [card_markdown(result.card, result.api), "---"]
    parts.append(result.reply)
    if result.alternatives:
        parts.append(alternatives_markdown(result.alternatives))
    if note_no_weights and result.api is not None and not result.images:
        parts.append(f"_{NO_WEIGHTS_NOTE}_")
    return "\n\n".join(parts)


def _seed_labels(result: TurnResult) -> list[str]:
    """Per-image captions: seed and unified score where the turn was scored."""
    per_image = (result.scores or {}).get("per_image") or []
    labels = []
    for number in range(len(result.images)):
        row = per_image[number] if number < len(per_image) else {}
        label = f"image {number + 1}"
        if row.get("seed") is not None:
            label = f"seed {row['seed']}"
        if row.get("unified") is not None:
            label += f" · S={row['unified']:.3f}"
        labels.append(label)
    return labels


def inline_elements(result: TurnResult) -> list[cl.Element]:
    """Images (captioned by seed and score) and the exports as downloadable files."""
    elements: list[cl.Element] = [
        cl.Image(path=str(path), name=label, display="inline")
        for path, label in zip(result.images, _seed_labels(result), strict=True)
    ]
    for key, filename in EXPORT_FILES.items():
        if key in result.exports:
            elements.append(
                cl.File(
                    name=filename,
                    content=result.exports[key].encode("utf-8"),
                    mime="text/x-python" if filename.endswith(".py") else "application/json",
                    display="inline",
                )
            )
    return elements


def side_markdown(result: TurnResult) -> str:
    """This turn's details as markdown: parameters, card, copyable exports (fenced blocks)."""
    parts = []
    if result.card is not None:
        card = result.card
        parts += [
            f"### [{_md(card.name)} {_md(card.version_name)}]({civitai_url(card)})",
            f"file `{card.file.name}` · AIR `{card.air}`",
            card.description,
        ]
    if result.api is not None:
        parts += [
            "### Parameters (T2I API)",
            f"```json\n{result.api.model_dump_json(indent=2)}\n```",
        ]
    for key in ("comfyui", "a1111", "diffusers"):
        if key in result.exports:
            heading = f"### {EXPORT_TITLES[key]}: `{EXPORT_FILES[key]}`"
            parts += [heading, f"```{EXPORT_LANGUAGES[key]}\n{result.exports[key]}\n```"]
    return "\n\n".join(part for part in parts if part)


def side_elements(result: TurnResult, turn: int) -> list[cl.Element]:
    """The side panel of this turn only (one markdown element; empty when no model)."""
    if result.api is None:
        return []
    return [cl.Text(name=f"turn {turn}", content=side_markdown(result), display="side")]


def render_turn(
    result: TurnResult, *, note_no_weights: bool = False
) -> tuple[str, list[cl.Element]]:
    """The message text and inline elements of a turn (the side panel is set separately)."""
    return answer_content(result, note_no_weights=note_no_weights), inline_elements(result)


def turn_actions(result: TurnResult) -> list[cl.Action]:
    """One click per alternative card: the same refinement as typing 'use version ID'."""
    return [
        cl.Action(
            name=ANOTHER_MODEL_ACTION,
            payload={"message": f"use version {alt.version_id}", "version_id": alt.version_id},
            label=f"Try {alt.name} instead",
            tooltip=f"Same as typing 'use version {alt.version_id}'",
            icon="shuffle",
        )
        for alt in result.alternatives
    ]


def step_summary(node: str, update: dict[str, Any]) -> str:
    """One line on what a graph node did, from its state update."""
    if node == "understand":
        changes = ", ".join(update.get("changes") or []) or "nothing new"
        return f"intent {update.get('intent', 'image')}; changes: {changes}"
    if node == "retrieve":
        return f"{len(update.get('candidates') or [])} candidate cards from the index"
    if node == "plan":
        ranking = update.get("ranking") or []
        source = update.get("plan_source") or "planner"
        return f"{source}: ranked {len(ranking)} cards" if ranking else f"{source}"
    if node == "validate":
        repairs = len(update.get("repairs") or [])
        flag = " (the planner's model was not in the catalog)" if update.get("hallucinated") else ""
        return f"{repairs} repair(s){flag}"
    if node == "compose":
        loras = update.get("composition") or []
        return f"{len(loras)} LoRA(s) composed" if loras else "no LoRA composed"
    if node == "critique":
        return f"{len(update.get('attempts') or [])} attempt(s) recorded"
    if node == "generate":
        return f"{len(update.get('images') or [])} image(s)"
    if node == "score":
        unified = (update.get("scores") or {}).get("unified")
        return f"unified score {unified:.3f}" if unified is not None else "scored"
    return "answer written"


def format_seconds(seconds: float) -> str:
    """A short duration: 12 ms, 1.4 s."""
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"
