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
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from diffagent.agent.planner import extract_json_object
from diffagent.agent.understand import Constraints
from diffagent.agent.validate import validate_and_repair
from diffagent.cards import ModelCard
from diffagent.finetune.data import CandidateSource, Format, Pair, prompt_messages, rank_answer
from diffagent.index.catalog import Catalog

if TYPE_CHECKING:
    from diffagent.index.search import CatalogIndex
    from diffagent.index.search.ranked import RankedSearch

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


def ranker_source(index: CatalogIndex, k: int, *, distinct_models: bool = True) -> CandidateSource:
    """Candidate source from the learned ranker: its top-k cards for the pair's prompt.

    As the ranker is trained, the pair's own image is left out of its card's evidence (a train
    pair's prompt is in the index's evidence: without this, its card would nearly always come
    first and teach nothing). With `distinct_models`, one version per model, as the agent's
    retrieval shows them. An index without a ranker gives its plain query results.
    """
    ranked = index.ranked

    def source(pair: Pair) -> list[ModelCard]:
        if ranked is None or ranked.ranker is None:
            cards = [hit.card for hit in index.query(pair.prompt, 3 * k)]
            return top_cards(cards, k, distinct_models=distinct_models)
        query = (" ".join(pair.prompt.split()), pair.version_id, pair.image_id)
        [(cards, _)] = ranker_top(
            ranked, [query], k, leave_one_out=True, distinct_models=distinct_models
        )
        return cards

    return source


def ranker_top(
    ranked: RankedSearch,
    queries: list[tuple[str, int, int]],
    k: int,
    *,
    leave_one_out: bool,
    vectors: np.ndarray | None = None,
    distinct_models: bool = True,
    show_progress: bool = False,
) -> list[tuple[list[ModelCard], list[float]]]:
    """The ranker's top-k cards and their scores for (prompt, version id, image id) queries.

    `leave_one_out` leaves each query's own image out of its card's evidence (queries whose
    image the index holds); `vectors` are the queries' embeddings where they are not evidence
    prompts (the dense features need them).
    """
    from diffagent.index.search.ranker import ranking_data

    if ranked.ranker is None:
        raise ValueError("the index has no trained ranker; build it with `diffagent index build`")
    data = ranking_data(
        ranked.index,
        queries,
        leave_one_out=leave_one_out,
        vectors=vectors,
        show_progress=show_progress,
        desc="ranker",
    )
    scores = ranked.ranker.score(data.features)
    out: list[tuple[list[ModelCard], list[float]]] = []
    offset = 0
    for rows, size in zip(data.candidates, data.groups, strict=True):
        block = scores[offset : offset + size]
        offset += size
        order = np.argsort(-block, kind="stable")
        score_of = {ranked.index.cards[int(rows[i])].version_id: float(block[i]) for i in order}
        ordered = [ranked.index.cards[int(rows[i])] for i in order]
        cards = top_cards(ordered, k, distinct_models=distinct_models)
        out.append((cards, [score_of[card.version_id] for card in cards]))
    return out


def ranker_train_images(index: CatalogIndex) -> frozenset[int]:
    """Image ids of the train pairs the index's ranker learned from (default RankerConfig).

    The planner learns to fix the ranker's mistakes: on the ranker's own training queries it
    makes few, so they teach little and are left out of the planner's groups.
    """
    from diffagent.index.search.ranked import training_queries
    from diffagent.index.search.ranker import RankerConfig, sample_queries

    ranked = index.ranked
    if ranked is None or ranked.ranker is None:
        return frozenset()
    config = RankerConfig()
    train, _ = training_queries(ranked.index, index.catalog)
    return frozenset(
        image for _, _, image in sample_queries(train, config.train_queries, config.seed)
    )


def with_gold(source: CandidateSource, catalog: Catalog, k: int) -> CandidateSource:
    """A source whose k cards always hold the pair's own card (it replaces the last if absent).

    With the catalog reward the pair's card is the best response; without it a group of equal
    rewards would train the cross-entropy on the ranker's first card, right or wrong.
    """
    from diffagent.finetune.data import with_truth

    def source_with_gold(pair: Pair) -> list[ModelCard]:
        truth = catalog.get(pair.version_id)
        cards = source(pair)
        return cards if truth is None else with_truth(cards, truth, k)

    return source_with_gold


def top_cards(cards: list[ModelCard], k: int, *, distinct_models: bool = True) -> list[ModelCard]:
    """The first k cards, keeping only the first version of each model when asked."""
    if not distinct_models:
        return cards[:k]
    seen: set[int] = set()
    kept = []
    for card in cards:
        if card.model_id not in seen:
            seen.add(card.model_id)
            kept.append(card)
            if len(kept) == k:
                break
    return kept


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
