"""Description reconstruction: a pluggable rewriter and a deterministic default, never raw HTML."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field
from sklearn.feature_extraction.text import TfidfVectorizer

WEIGHT_SYNTAX = re.compile(r"[()\[\]{}]|:\s*-?\d+(?:\.\d+)?")
PHRASE_SPLIT = re.compile(r"[,\n|;]+|\bBREAK\b")
MAX_PHRASE_WORDS = 5


class CardFacts(BaseModel):
    """What the rewriter may use: catalog facts and distinctive prompt terms, all data, no HTML."""

    model_config = ConfigDict(extra="forbid")

    name: str
    version_name: str = ""
    type: str
    base_model: str
    tags: list[str] = Field(default_factory=list)
    trigger_words: list[str] = Field(default_factory=list)
    keywords: list[str] = Field(default_factory=list)
    n_prompts: int = 0


class DescriptionRewriter(Protocol):
    """Turns card facts into a short description (an LLM rewriter can implement this)."""

    def describe(self, facts: CardFacts) -> str:
        """Return the description text for one card."""
        ...


class TemplateRewriter:
    """Deterministic default: a few sentences from type, base, tags, trigger words, keywords."""

    def __init__(self, max_tags: int = 6, max_keywords: int = 8) -> None:
        self.max_tags = max_tags
        self.max_keywords = max_keywords

    def describe(self, facts: CardFacts) -> str:
        """Summarise the facts of one card."""
        kind = "LoRA" if facts.type == "LORA" else "checkpoint"
        title = f"{facts.name} {facts.version_name}".strip()
        parts = [f"{title}: {facts.base_model} {kind}"]
        if facts.tags:
            parts[0] += f" for {', '.join(facts.tags[: self.max_tags])}"
        parts[0] += "."
        if facts.trigger_words:
            parts.append(f"Trigger words: {', '.join(facts.trigger_words[:4])}.")
        if facts.keywords:
            parts.append(
                f"Its sample prompts feature {', '.join(facts.keywords[: self.max_keywords])}."
            )
        return " ".join(parts)


def prompt_phrases(prompt: str) -> list[str]:
    """Split a prompt into normalised comma phrases, without weights or emphasis brackets."""
    phrases = []
    for raw in PHRASE_SPLIT.split(prompt):
        text = WEIGHT_SYNTAX.sub(" ", raw).replace("_", " ").lower()
        text = re.sub(r"\s+", " ", text).strip(" .:-'\"")
        if len(text) >= 3 and len(text.split()) <= MAX_PHRASE_WORDS and re.search("[a-z]", text):
            phrases.append(text)
    return phrases


def distinctive_terms(
    documents: Sequence[Sequence[str]],
    top_k: int = 12,
    *,
    max_df: float = 0.05,
    keep: Callable[[str], bool] | None = None,
) -> list[list[str]]:
    """Top TF-IDF prompt phrases of each document (a document is one card's prompts)."""
    if not documents:
        return []
    vectorizer = TfidfVectorizer(
        analyzer=lambda doc: [p for prompt in doc for p in prompt_phrases(prompt)],
        max_df=max_df if len(documents) >= 50 else 1.0,
        sublinear_tf=True,
    )
    try:
        matrix = vectorizer.fit_transform(documents).tocsr()
    except ValueError:  # no phrase at all in any document
        return [[] for _ in documents]
    vocabulary = vectorizer.get_feature_names_out()
    result = []
    for row in range(matrix.shape[0]):
        start, end = matrix.indptr[row], matrix.indptr[row + 1]
        columns, weights = matrix.indices[start:end], matrix.data[start:end]
        order = sorted(range(len(columns)), key=lambda i: (-weights[i], vocabulary[columns[i]]))
        terms = [str(vocabulary[columns[i]]) for i in order]
        if keep is not None:
            terms = [t for t in terms if keep(t)]
        result.append(terms[:top_k])
    return result
