"""Planning: backends behind one protocol, generate mode (LLM writes the API) and rank mode.

Rank mode scores each candidate card's compact answer text (its recommended parameters, plus
size variants for the best cards) by length-normalised log-likelihood
p_i = sum_t log P(r_t | x, r_<t) / |r|, the quantity RRHF trains; it can only return catalog
cards. Generate mode is the paper's: the LLM writes the API JSON, parsed leniently and left to
validation/repair.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, model_validator

from diffagent.agent import prompts
from diffagent.agent.card_api import card_api, recommended_size
from diffagent.agent.understand import Constraints
from diffagent.api import T2IApi
from diffagent.base_models import BASE_MODELS
from diffagent.cards import ModelCard
from diffagent.errors import BadInputError


class PlannerConfig(BaseModel):
    """How the plan is made: the mode, which planner LLM and how it decodes."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["rank", "generate", "retrieval"] = Field(
        default="retrieval",
        description="retrieval (default): the ranked index's top card with its parameters, no "
        "LLM (the stock planner adds no accuracy over the ranker, measured); rank: the LLM "
        "scores candidate APIs; generate: the LLM writes the API JSON.",
    )
    rank_prior: float = Field(
        default=2.0,
        ge=0.0,
        description="Rank mode: option score = LLM log-likelihood - rank_prior * log(1 + "
        "retrieval rank). 2.0 was best for the untuned SmolLM2 on 100 held-out val prompts; "
        "0 ranks by the LLM alone (for a fine-tuned planner).",
    )
    llm_weight: float = Field(
        default=0.1,
        ge=0.0,
        description="Rank mode over the learned ranker: option score = ranker score + "
        "llm_weight * log-likelihood. 0.1 was best on 1,275 held-out val pairs for the SFT and "
        "shipped RRHF planners (bench_planner_adapters; 0.4 for the stock one); an index without "
        "a ranker uses rank_prior instead.",
    )
    rank_candidates: int = Field(
        default=5,
        ge=1,
        le=50,
        description="Rank mode scores only the first N retrieved cards (one LLM pass each); "
        "the rest follow in retrieval order. Fewer is faster.",
    )
    backend: Literal["embedded", "openai"] = Field(
        default="embedded", description="embedded: SmolLM2 in-process; openai: an endpoint."
    )
    adapter_path: Path | None = Field(
        default=None, description="PEFT adapter folder for the embedded model."
    )
    model_dir: Path | None = Field(
        default=None,
        description="Embedded model folder (safetensors + tokenizer); None: the cached SmolLM2.",
    )
    base_url: str | None = Field(
        default=None, description="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1."
    )
    model: str | None = Field(
        default=None, description="Model name at the endpoint; None: the first it lists."
    )
    api_key: str | None = Field(default=None, description="Endpoint key (vLLM accepts any).")
    max_new_tokens: int = Field(default=256, ge=1, le=4096)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    threads: int | None = Field(
        default=None, ge=1, le=64, description="torch CPU threads (embedded); None: automatic."
    )
    dtype: Literal["auto", "float32", "bfloat16"] = Field(
        default="auto",
        description="Embedded weights: auto = bfloat16 where the CPU has it (2x faster here).",
    )
    timeout_s: float = Field(default=60.0, gt=0, description="Endpoint request timeout.")
    understanding: Literal["rules", "llm"] = Field(
        default="rules",
        description="How a chat message is read: rules (embedded default), or llm: the endpoint "
        "writes the constraints as structured JSON, checked by the same rules (backend openai).",
    )

    @model_validator(mode="after")
    def _endpoint_needs_url(self) -> PlannerConfig:
        if self.backend == "openai" and not self.base_url:
            raise ValueError(
                "planner backend 'openai' needs base_url (e.g. http://127.0.0.1:8000/v1)"
            )
        if self.understanding == "llm" and self.backend != "openai":
            raise ValueError(
                "understanding 'llm' needs a capable model: set backend 'openai' and base_url"
            )
        return self


@runtime_checkable
class PlannerBackend(Protocol):
    """A chat LLM the planner can prompt and use to score candidate answers."""

    name: str

    def complete(
        self,
        messages: list[dict[str, str]],
        *,
        json_schema: dict[str, Any] | None = None,
        max_new_tokens: int = 256,
    ) -> str:
        """The assistant's reply to `messages` (JSON-constrained where the backend can)."""
        ...

    def score_continuations(
        self, messages: list[dict[str, str]], continuations: list[str]
    ) -> list[float]:
        """Length-normalised log-likelihood of each continuation after the chat prompt."""
        ...


def make_backend(config: PlannerConfig | None = None) -> PlannerBackend:
    """Build the configured backend; nothing heavy loads until its first call."""
    cfg = config or PlannerConfig()
    if cfg.backend == "embedded":
        from diffagent.agent.llm_embedded import EmbeddedBackend

        return EmbeddedBackend(
            cfg.model_dir,
            adapter_path=cfg.adapter_path,
            temperature=cfg.temperature,
            threads=cfg.threads,
            max_new_tokens=cfg.max_new_tokens,
            dtype=cfg.dtype,
        )
    from diffagent.agent.llm_openai import OpenAIBackend

    assert cfg.base_url is not None  # checked by PlannerConfig
    return OpenAIBackend(
        cfg.base_url,
        model=cfg.model,
        api_key=cfg.api_key,
        temperature=cfg.temperature,
        timeout_s=cfg.timeout_s,
    )


class GenerateResult(BaseModel):
    """Generate mode's outcome: the raw text and its parsed JSON (not yet validated)."""

    raw_text: str
    api: dict[str, Any] | None = Field(description="First JSON object in the text, or None.")
    error: str | None = Field(default=None, description="Why `api` is None, when it is.")
    latency_ms: float = 0.0


class RankedOption(BaseModel):
    """One scored candidate: a catalog card with a full API and its log-likelihood."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    api: T2IApi
    card: ModelCard
    logprob: float = Field(description="Length-normalised log-likelihood of the answer text.")
    score: float = Field(default=0.0, description="Sort key: logprob plus the retrieval prior.")
    text: str = Field(default="", description="The answer text that was scored.")
    retrieval_rank: int = Field(default=0, description="Position of the card in the input list.")


class RankResult(BaseModel):
    """Rank mode's outcome: options best first (several per card when variants were scored)."""

    options: list[RankedOption]
    latency_ms: float = 0.0

    def cards(self) -> list[ModelCard]:
        """Distinct cards, best first."""
        seen: dict[int, ModelCard] = {}
        for option in self.options:
            seen.setdefault(option.card.version_id, option.card)
        return list(seen.values())


def extract_json_object(text: str) -> dict[str, Any] | None:
    """The first JSON object in `text` (code fences and chatter around it are ignored), or None."""
    decoder = json.JSONDecoder()
    start = text.find("{")
    while start != -1:
        for candidate in (text[start:], text[start:].rstrip().rstrip(",") + "}"):
            try:
                value, _ = decoder.raw_decode(candidate)
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict):
                return value
        start = text.find("{", start + 1)
    return None


def plan_generate(
    backend: PlannerBackend,
    prompt: str,
    negative_prompt: str,
    candidates: list[ModelCard],
    *,
    max_new_tokens: int = 192,
) -> GenerateResult:
    """Let the LLM write the API JSON over the candidate cards (the paper's mode)."""
    _check_inputs(prompt, candidates)
    started = time.perf_counter()
    messages = prompts.generate_messages(prompt, negative_prompt, candidates)
    raw = backend.complete(
        messages, json_schema=prompts.generate_json_schema(), max_new_tokens=max_new_tokens
    )
    latency = (time.perf_counter() - started) * 1000
    api = extract_json_object(raw)
    error = None if api is not None else f"planner output is not a JSON object: {raw[:120]!r}"
    return GenerateResult(raw_text=raw, api=api, error=error, latency_ms=latency)


def plan_rank(
    backend: PlannerBackend,
    prompt: str,
    negative_prompt: str,
    candidates: list[ModelCard],
    *,
    variant_cards: int = 0,
    retrieval_weight: float = 0.0,
    constraints: Constraints | None = None,
    ranker_scores: list[float] | None = None,
    llm_weight: float = 1.0,
) -> RankResult:
    """Score every candidate card's answer (and size variants of the best) and sort them.

    With `ranker_scores` (the learned ranker's, one per candidate), options are sorted by
    `score` = ranker score + llm_weight * logprob. Without them, by logprob -
    retrieval_weight * ln(1 + retrieval rank): the index's order (`candidates`) is a prior
    beside the LLM's p_i; the agent passes its configured `rank_prior`, and the default 0 ranks
    by the LLM alone.
    `variant_cards` > 0 also scores the other aspect sizes of the best cards; off by default so
    that every mode gives a card the same parameters.
    """
    _check_inputs(prompt, candidates)
    cons = constraints or Constraints(prompt=prompt, negative_prompt=negative_prompt)
    if retrieval_weight < 0 or llm_weight < 0:
        raise ValueError(
            f"retrieval_weight and llm_weight must be >= 0, got {retrieval_weight}, {llm_weight}"
        )
    if ranker_scores is not None and len(ranker_scores) != len(candidates):
        raise ValueError(
            f"{len(ranker_scores)} ranker scores for {len(candidates)} candidates; one each"
        )
    started = time.perf_counter()
    messages = prompts.rank_messages(prompt, negative_prompt)
    entries: list[tuple[int, tuple[int, int], str]] = []
    for rank, card in enumerate(candidates):
        size = recommended_size(card)
        entries.append((rank, size, prompts.render_rank_candidate(card, *size)))
    scored = list(
        zip(backend.score_continuations(messages, [e[2] for e in entries]), entries, strict=True)
    )

    def fused(row: tuple[float, tuple[int, tuple[int, int], str]]) -> float:
        if ranker_scores is not None:
            return ranker_scores[row[1][0]] + llm_weight * row[0]
        return row[0] - retrieval_weight * math.log1p(row[1][0])

    best = sorted(scored, key=lambda row: -fused(row))[:variant_cards]
    variants: list[tuple[int, tuple[int, int], str]] = []
    for _, (rank, size, _) in best:
        card = candidates[rank]
        for other in BASE_MODELS[card.base_model].aspect_sizes.values():
            if other != size:
                variants.append((rank, other, prompts.render_rank_candidate(card, *other)))
    if variants:
        more = backend.score_continuations(messages, [e[2] for e in variants])
        scored += zip(more, variants, strict=True)
    scored.sort(key=lambda row: (-fused(row), row[1][0]))
    checkpoints = _best_checkpoints([entry[0] for _, entry in scored], candidates)
    options = [
        RankedOption(
            api=card_api(
                candidates[rank],
                cons,
                size=size,
                checkpoint=checkpoints.get(candidates[rank].base_model),
            ),
            card=candidates[rank],
            logprob=logprob,
            score=fused((logprob, (rank, size, text))),
            text=text,
            retrieval_rank=rank,
        )
        for logprob, (rank, size, text) in scored
    ]
    return RankResult(options=options, latency_ms=(time.perf_counter() - started) * 1000)


def _check_inputs(prompt: str, candidates: list[ModelCard]) -> None:
    if not prompt.strip():
        raise BadInputError("the image prompt is empty; describe the image you want")
    if not candidates:
        raise BadInputError("the planner needs at least one candidate card")


def _best_checkpoints(order: list[int], candidates: list[ModelCard]) -> dict[str, ModelCard]:
    """Per base model, the best-ranked checkpoint candidate (the base a LoRA option runs on)."""
    best: dict[str, ModelCard] = {}
    for rank in order:
        card = candidates[rank]
        if card.type == "Checkpoint":
            best.setdefault(card.base_model, card)
    return best
