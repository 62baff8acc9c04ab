"""Understanding by an LLM: the message becomes `Constraints` JSON through structured output.

Used when `planner.understanding` is "llm" (a capable OpenAI-compatible model is configured).
The rule-based reader (`understand.understand`) still runs first: its gates (empty, NSFW,
over-long messages) and its name resolution are kept, and its reading is the fallback whenever
the model's answer is not valid JSON for the schema or breaks a rule. The model's constraints are
then held to the same rules: the NSFW policy is the settings', a pick must resolve to a catalog
card, sizes, steps and CFG stay in range and exclusions only grow by the current card.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from diffagent.agent.streaming import token_sink
from diffagent.agent.understand import MAX_PROMPT_CHARS, Constraints, Understanding, understand
from diffagent.base_models import STEPS_RANGE

log = logging.getLogger(__name__)

CFG_RANGE = (1.0, 30.0)
SIZE_RANGE = (256, 2048)

SYSTEM = (
    "You read one chat message to an image-generation assistant and return JSON for the schema. "
    "`constraints` is the whole request after this message: start from the previous constraints "
    "and change only what the message asks. A new image description replaces `prompt` (and "
    "clears `styles`); a refinement such as 'make it anime', 'no LoRA', 'SDXL only', 'seed 42' or "
    "'40 steps' changes just that field and keeps the prompt, rewriting medium words in the prompt "
    "instead of adding conflicting ones. 'Another model' adds the current card's version id to "
    "`exclude_version_ids`. `replan` is true when the model must be chosen again (prompt, style, "
    "base model, type, LoRA or exclusions changed), false for parameter-only changes (size, steps, "
    "CFG, sampler, seed). `intent` is 'question' for a question about the current image or "
    "settings, else 'image'. `changes` lists what changed in a few words each."
)


class LLMReading(BaseModel):
    """The structured answer asked of the model (its JSON schema is the response format)."""

    intent: Literal["image", "question"] = "image"
    constraints: Constraints
    replan: bool = Field(description="Whether the model must be chosen again.")
    changes: list[str] = Field(default_factory=list, description="What this message changed.")


def understand_with_llm(
    message: str,
    previous: Constraints | None,
    llm: Any,
    *,
    current_api: dict | None = None,
    allow_nsfw: bool = False,
    resolve_name: Callable[[str], int | None] | None = None,
    max_new_tokens: int = 512,
) -> Understanding:
    """Read `message` with `llm` (a planner backend), falling back to the rule-based reading."""
    rules = understand(
        message,
        previous,
        current_api=current_api,
        allow_nsfw=allow_nsfw,
        resolve_name=resolve_name,
    )
    if rules.intent in ("empty", "nsfw"):
        return rules  # the gates are rules, never a model's judgement
    messages = [
        {"role": "system", "content": SYSTEM},
        {
            "role": "user",
            "content": json.dumps(
                {
                    "previous_constraints": (previous or Constraints()).model_dump(mode="json"),
                    "current_card": _card_summary(current_api),
                    "message": message.strip()[:MAX_PROMPT_CHARS],
                },
                ensure_ascii=False,
            ),
        },
    ]
    try:
        with token_sink(lambda _text: None):  # the reading is not the reply: stream nothing
            raw = llm.complete(
                messages,
                json_schema=LLMReading.model_json_schema(),
                max_new_tokens=max_new_tokens,
            )
        reading = LLMReading.model_validate_json(_json_part(raw))
    except (ValidationError, ValueError) as error:
        log.info("LLM understanding unusable, rules used: %s", error)
        return rules
    except Exception as error:  # the endpoint failed: the rules still answer the user
        log.warning("LLM understanding failed, rules used: %s", error)
        return rules
    constraints, notes = checked(reading.constraints, previous, current_api, allow_nsfw)
    if notes is None:
        return rules
    return Understanding(
        intent=reading.intent,
        constraints=constraints,
        replan=reading.replan or _choice_changed(constraints, previous),
        changes=reading.changes,
        notes=[*rules.notes, *notes],
    )


def checked(
    constraints: Constraints,
    previous: Constraints | None,
    current_api: dict | None,
    allow_nsfw: bool,
) -> tuple[Constraints, list[str] | None]:
    """The model's constraints held to the rules; notes None when they cannot be used at all."""
    out = constraints.model_copy(deep=True)
    notes: list[str] = []
    out.allow_adult = allow_nsfw  # the policy is the settings', whatever the model wrote
    if not out.prompt.strip():
        return out, None
    out.prompt = out.prompt.strip()[:MAX_PROMPT_CHARS]
    allowed_exclusions = set(previous.exclude_version_ids if previous else [])
    if current_api and current_api.get("version_id") is not None:
        allowed_exclusions.add(int(current_api["version_id"]))
    out.exclude_version_ids = [v for v in out.exclude_version_ids if v in allowed_exclusions]
    if out.steps is not None:
        out.steps = min(max(out.steps, STEPS_RANGE[0]), STEPS_RANGE[1])
    if out.cfg_scale is not None:
        out.cfg_scale = min(max(out.cfg_scale, CFG_RANGE[0]), CFG_RANGE[1])
    for name in ("width", "height"):
        value = getattr(out, name)
        if value is not None and not SIZE_RANGE[0] <= value <= SIZE_RANGE[1]:
            setattr(out, name, None)
            notes.append(f"A {name} of {value} px is out of range; the card's default is kept.")
    return out, notes


def _choice_changed(constraints: Constraints, previous: Constraints | None) -> bool:
    """Whether a field that bears on the model choice differs from the previous constraints."""
    if previous is None:
        return True
    fields = ("prompt", "styles", "base_model", "model_type", "no_lora", "exclude_version_ids")
    return any(getattr(constraints, f) != getattr(previous, f) for f in fields)


def _card_summary(api: dict | None) -> dict[str, Any] | None:
    """The parts of the current API the model needs to read a refinement."""
    if not api:
        return None
    keys = ("model", "version_id", "type", "base_model", "width", "height", "sampling_steps")
    return {key: api.get(key) for key in keys}


def _json_part(text: str) -> str:
    """The outermost JSON object of a reply (servers without structured output add prose)."""
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        raise ValueError("no JSON object in the reply")
    return text[start : end + 1]
