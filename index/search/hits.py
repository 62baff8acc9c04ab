"""A search result: one card with its final score and each channel's raw score."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from diffagent.cards import ModelCard


class SearchHit(BaseModel):
    """One retrieved card with its fused score and each channel's raw score."""

    model_config = ConfigDict(arbitrary_types_allowed=False)

    card: ModelCard
    score: float = Field(description="Fused score, higher is better.")
    lexical_score: float | None = Field(description="BM25 score (name similarity for name search).")
    dense_score: float | None = Field(
        description="Cosine similarity; None if not a dense candidate."
    )
