"""The one check of query arguments: k, and the base-model and model-type filters."""

from __future__ import annotations

from collections.abc import Sequence

from diffagent.base_models import BASE_MODELS, MODEL_TYPES
from diffagent.errors import BadInputError


def normalize_filter(value: str | None, allowed: Sequence[str], what: str) -> str | None:
    """Map a filter value to its canonical spelling (case-insensitive) or raise listing choices."""
    if value is None or value == "":
        return None
    for choice in allowed:
        if value.strip().lower() == choice.lower():
            return choice
    raise BadInputError(f"unknown {what} {value!r}; allowed: {', '.join(allowed)}")


def checked_query_args(
    k: int, base_model: str | None, model_type: str | None
) -> tuple[str | None, str | None]:
    """Validate k and normalise the metadata filters (one-line errors listing what is allowed)."""
    if k < 1:
        raise BadInputError(f"k must be at least 1, got {k}")
    return (
        normalize_filter(base_model, list(BASE_MODELS), "base model"),
        normalize_filter(model_type, MODEL_TYPES, "model type"),
    )
