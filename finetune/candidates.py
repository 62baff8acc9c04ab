"""RRHF candidates per prompt: SFT samples, the ranker's top cards and the default API.

Samples come from the SFT model (multinomial sampling, or beam search); only their model part is
kept (the name before the first `|` in rank format, `model`/`version_id` in generate format) and
the agent's own validate/repair turns it into a catalog card with complete parameters. The
default API is the ranker's first card (what the default retrieval path answers).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from diffagent.agent.planner import extract_json_object
from diffagent.agent.understand import Constraints
from diffagent.agent.validate import validate_and_repair
from diffagent.cards import ModelCard
from diffagent.finetune.data import CandidateSource, Format, Pair, prompt_messages, rank_answer
from diffagent.index.catalog import Catalog

SampleMethod = Literal["multinomial", "beam"]
_MARKER = re.compile(r"\s*\((?:LoRA|SDXL|LoRA, SDXL)\)\s*$")
Sampler = Callable[[Pair, int], list[str]]


def model_part(text: str, fmt: Format) -> dict[str, Any]:
    """The model part of a sampled answer, as a partial API for validate/repair."""
    if fmt == "generate":
        api = extract_json_object(text) or {}
        return {key: api[key] for key in ("model", "version_id") if key in api}
    name = _MARKER.sub("", text.split("|", 1)[0].strip())
    return {"model": name} if name else {}


def resolve(part: dict[str, Any], catalog: Catalog, pair: Pair) -> tuple[ModelCard, bool]:
    """The catalog card validate/repair makes of a model part, and whether it was hallucinated."""
    cons = Constraints(prompt=pair.prompt, negative_prompt=pair.negative_prompt)
    result = validate_and_repair(part, catalog, None, cons)
    return result.card, result.hallucinated


def ranker_source(catalog: Catalog, index_dir: Path | None, k: int) -> CandidateSource:
    """Candidate source from the ranked index: its top-k cards for the pair's prompt."""
    from diffagent.index.search import CatalogIndex

    index = CatalogIndex.open(catalog.directory, index_dir)

    def source(pair: Pair) -> list[ModelCard]:
        return [hit.card for hit in index.query(pair.prompt, k)]

    return source


def first_stage_source(catalog: Catalog, k: int) -> CandidateSource:
    """Candidate source without embeddings: the ranker's lexical first stage (BM25 + TF-IDF).

    The test split's images are left out of the evidence and each train prompt's own image is
    left out of its card's evidence (the conditions the ranker is trained and tested in).
    """
    from diffagent.index.catalog import iter_evidence
    from diffagent.index.search.evidence import collapse_near_duplicates, split_image_ids
    from diffagent.index.search.evidence_index import Evidence, EvidenceIndex
    from diffagent.index.search.first_stage import first_stage

    excluded = split_image_ids(catalog.directory, "test")
    pool: Evidence = {}
    for version_id, items in iter_evidence(catalog.directory):
        if catalog.get(version_id) is not None:
            pool[version_id] = sorted((i, p) for i, p in items if i not in excluded)
    evidence = {v: collapse_near_duplicates(items) for v, items in pool.items()}
    cards = sorted(catalog, key=lambda card: card.version_id)
    index = EvidenceIndex.build(cards, evidence, pool, None)
    row_of = {card.version_id: row for row, card in enumerate(index.cards)}

    def source(pair: Pair) -> list[ModelCard]:
        row = row_of.get(pair.version_id)
        loo = index.leave_one_out(row, pair.image_id) if row is not None else None
        rows, _ = first_stage(index, pair.prompt, loo=loo)
        return [index.cards[int(r)] for r in rows[:k]]

    return source


def model_sampler(
    model: Any,
    tokenizer: Any,
    fmt: Format,
    method: SampleMethod = "multinomial",
    max_new_tokens: int | None = None,
) -> Sampler:
    """Sampler of m answers from a causal LM for a pair's run-time prompt.

    Only the model part is kept, so rank answers are cut at 16 tokens (the name comes first).
    """
    limit = max_new_tokens or (16 if fmt == "rank" else 96)
    import torch

    def sample(pair: Pair, m: int) -> list[str]:
        if m <= 0:
            return []
        ids = tokenizer.apply_chat_template(
            prompt_messages(pair, fmt), add_generation_prompt=True, tokenize=True
        )
        ids = ids["input_ids"] if hasattr(ids, "keys") else ids
        input_ids = torch.tensor([list(ids)])
        kwargs: dict[str, Any] = {"num_return_sequences": m, "max_new_tokens": limit}
        if method == "multinomial":
            kwargs.update(do_sample=True, temperature=1.0, top_k=0, top_p=1.0)
        else:
            kwargs.update(do_sample=False, num_beams=max(2, m), early_stopping=True)
        with torch.inference_mode():
            out = model.generate(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
                **kwargs,
            )
        return [
            str(tokenizer.decode(row[input_ids.shape[1] :], skip_special_tokens=True))
            for row in out
        ]

    return sample


def candidate_cards(
    pair: Pair,
    catalog: Catalog,
    ranked: list[ModelCard],
    samples: list[str],
    n: int,
    fmt: Format = "rank",
    seed: int = 0,
) -> tuple[list[ModelCard], int]:
    """N distinct cards: the default (ranker's first), the resolved samples, then the ranker's.

    Short lists are filled with random cards of the true card's base model. Returns the cards
    and how many samples were hallucinated (matched no card before repair).
    """
    cards: list[ModelCard] = []
    hallucinated = 0
    resolved: list[ModelCard] = []
    for text in samples:
        card, fake = resolve(model_part(text, fmt), catalog, pair)
        hallucinated += fake
        resolved.append(card)
    for card in [*ranked[:1], *resolved, *ranked[1:]]:
        if len(cards) < n and all(card.version_id != c.version_id for c in cards):
            cards.append(card)
    if len(cards) < n:
        truth = catalog.get(pair.version_id)
        base = truth.base_model if truth else None
        pool = [c for c in catalog if c.base_model == base or base is None]
        rng = random.Random(f"{seed}:{pair.image_id}")
        rng.shuffle(pool)
        for card in pool:
            if len(cards) == n:
                break
            if all(card.version_id != c.version_id for c in cards):
                cards.append(card)
    if len(cards) < n:
        raise ValueError(f"the catalog has fewer than {n} cards for an RRHF group")
    return cards, hallucinated


def build_group(
    pair: Pair,
    cards: list[ModelCard],
    scores: list[float],
    fmt: Format = "rank",
) -> dict[str, Any]:
    """One RRHF group row: the run-time prompt, the responses and their rewards."""
    if fmt != "rank":
        from diffagent.finetune.data import generate_answer

        responses = [generate_answer(card) for card in cards]
        messages = prompt_messages(pair, fmt, cards)
    else:
        responses = [rank_answer(card) for card in cards]
        messages = prompt_messages(pair, fmt)
    return {
        "prompt": messages,
        "query": pair.prompt,
        "responses": responses,
        "scores": [float(s) for s in scores],
        "version_ids": [card.version_id for card in cards],
        "truth": pair.version_id,
    }
