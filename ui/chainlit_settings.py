"""The chat settings panel: base model, model type, size, steps and seed, sent as refinements."""

from __future__ import annotations

from typing import Any

from chainlit.input_widget import InputWidget, Select, Slider, TextInput

ANY = "any"
BASE_CHOICES = {ANY: "any base model", "SD 1.5": "SD 1.5 only", "SDXL 1.0": "SDXL only"}
TYPE_CHOICES = {"checkpoint or LoRA": "use LoRA", "checkpoint only": "no LoRA"}
ASPECT_CHOICES = {
    "model default": "",
    "square": "make it square",
    "portrait": "portrait format",
    "landscape": "landscape format",
}
DEFAULTS: dict[str, Any] = {
    "base_model": ANY,
    "model_type": "checkpoint or LoRA",
    "aspect": "model default",
    "steps": 0,
    "seed": "",
}


def widgets() -> list[InputWidget]:
    """The settings panel's inputs, at their defaults (no constraint)."""
    return [
        Select(
            id="base_model",
            label="Base model",
            values=list(BASE_CHOICES),
            initial_value=DEFAULTS["base_model"],
        ),
        Select(
            id="model_type",
            label="Model type",
            values=list(TYPE_CHOICES),
            initial_value=DEFAULTS["model_type"],
        ),
        Select(
            id="aspect",
            label="Size / aspect",
            values=list(ASPECT_CHOICES),
            initial_value=DEFAULTS["aspect"],
        ),
        Slider(
            id="steps",
            label="Sampling steps (0 = the model's recommendation)",
            initial=DEFAULTS["steps"],
            min=0,
            max=80,
            step=1,
        ),
        TextInput(
            id="seed",
            label="Seed (empty = random)",
            initial=DEFAULTS["seed"],
            placeholder="e.g. 42",
        ),
    ]


def refinement_text(previous: dict[str, Any], current: dict[str, Any]) -> str:
    """The refinement message for what changed between two settings states ('' if nothing).

    The words are the ones a user would type ("SDXL only", "no LoRA", "square", "40 steps",
    "seed 42"), so the agent applies them exactly like a typed refinement.
    """
    parts: list[str] = []

    def changed(key: str) -> bool:
        return current.get(key, DEFAULTS[key]) != previous.get(key, DEFAULTS[key])

    if changed("base_model"):
        parts.append(BASE_CHOICES.get(str(current["base_model"]), ""))
    if changed("model_type"):
        parts.append(TYPE_CHOICES.get(str(current["model_type"]), ""))
    if changed("aspect"):
        parts.append(ASPECT_CHOICES.get(str(current["aspect"]), ""))
    if changed("steps") and int(current.get("steps") or 0) > 0:
        parts.append(f"{int(current['steps'])} steps")
    seed = str(current.get("seed") or "").strip()
    if changed("seed") and seed.isdigit():
        parts.append(f"seed {int(seed)}")
    text = ", ".join(part for part in parts if part)
    # A leading "now" marks it as a refinement (not a new description) for the agent.
    return f"now {text}" if text else ""
