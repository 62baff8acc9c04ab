"""Training data from a catalog's pairs, in exactly the planner's run-time prompt formats.

SFT examples are conversational prompt-completion rows (`prompt`: chat messages, `completion`:
the assistant turn) built with `agent/prompts.py`, so the chat template applied in training is
the one the embedded planner applies at run time. Rank format: the rank-mode prefix and the true
card's answer line; generate format: the generate prompt over candidate cards and the API JSON.
RRHF groups are `{prompt, query, responses, scores}` rows with the same number of responses each.
Only the train and val splits are read here: the test split is for evaluation alone.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from diffagent.agent import prompts
from diffagent.agent.card_api import card_api, recommended_size
from diffagent.agent.understand import Constraints
from diffagent.cards import ModelCard
from diffagent.index.catalog import Catalog

Format = Literal["rank", "generate"]
TRAINING_SPLITS = ("train", "val")
Messages = list[dict[str, str]]
CandidateSource = Callable[["Pair"], list[ModelCard]]


@dataclass(frozen=True)
class Pair:
    """One instruction-API pair: the prompt people wrote and the card (and params) they used."""

    prompt: str
    negative_prompt: str
    version_id: int
    image_id: int
    api: dict[str, Any]


def read_pairs(
    catalog_dir: Path, split: str, *, limit: int | None = None, seed: int = 0
) -> list[Pair]:
    """Pairs of a training split (train or val) with a prompt and a version id; seeded sample."""
    if split not in TRAINING_SPLITS:
        raise ValueError(f"training reads only {TRAINING_SPLITS} pairs, not {split!r}")
    path = Path(catalog_dir) / "pairs" / f"{split}.jsonl"
    if not path.is_file():
        raise FileNotFoundError(
            f"no pairs at {path}; build the catalog with `diffagent catalog build`"
        )
    pairs: list[Pair] = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if not line.strip():
                continue
            row = json.loads(line)
            instruction, api = row.get("instruction", {}), row.get("api", {})
            if not instruction.get("prompt") or api.get("version_id") is None:
                continue
            pairs.append(
                Pair(
                    prompt=str(instruction["prompt"]),
                    negative_prompt=str(instruction.get("negative_prompt") or ""),
                    version_id=int(api["version_id"]),
                    image_id=int(row.get("image_id") or 0),
                    api=api,
                )
            )
    if limit is not None and len(pairs) > limit:
        pairs = random.Random(seed).sample(pairs, limit)
    return pairs


def rank_answer(card: ModelCard) -> str:
    """The rank-mode answer line of a card at its recommended size (what rank mode scores)."""
    return prompts.render_rank_candidate(card, *recommended_size(card))


def generate_answer(card: ModelCard, pair: Pair | None = None) -> str:
    """The generate-mode API JSON for a card: the pair's own parameters where it has them."""
    api = card_api(card, Constraints(prompt=pair.prompt if pair else ""))
    values = api.model_dump(mode="json")
    answer: dict[str, Any] = {}
    for name in prompts.GENERATE_FIELDS[:-1]:  # model_description is long and optional
        answer[name] = values.get(name)
    answer["model"] = card.display_name
    answer["version_id"] = card.version_id
    if pair is not None and pair.version_id == card.version_id:
        for name in ("width", "height", "sampling_method", "sampling_steps", "cfg_scale"):
            if pair.api.get(name) is not None:
                answer[name] = pair.api[name]
    return json.dumps(answer, ensure_ascii=False)


def prompt_messages(pair: Pair, fmt: Format, candidates: list[ModelCard] | None = None) -> Messages:
    """The planner's run-time prompt for a pair: rank prefix, or generate prompt over cards."""
    if fmt == "rank":
        return prompts.rank_messages(pair.prompt, pair.negative_prompt)
    return prompts.generate_messages(pair.prompt, pair.negative_prompt, candidates or [])


def sft_example(
    pair: Pair, card: ModelCard, fmt: Format, candidates: list[ModelCard] | None = None
) -> dict[str, Any]:
    """One conversational prompt-completion row for trl's SFTTrainer."""
    answer = rank_answer(card) if fmt == "rank" else generate_answer(card, pair)
    return {
        "prompt": prompt_messages(pair, fmt, candidates),
        "completion": [{"role": "assistant", "content": answer}],
    }


def random_candidates(catalog: Catalog, k: int, seed: int = 0) -> CandidateSource:
    """Candidate source without an index: the true card among k-1 random cards of its base."""
    by_base: dict[str, list[ModelCard]] = {}
    for card in catalog:
        by_base.setdefault(card.base_model, []).append(card)

    def source(pair: Pair) -> list[ModelCard]:
        truth = catalog.get(pair.version_id)
        assert truth is not None
        rng = random.Random(f"{seed}:{pair.image_id}:{pair.version_id}")
        pool = [c for c in by_base[truth.base_model] if c.version_id != truth.version_id]
        cards = [truth, *rng.sample(pool, min(k - 1, len(pool)))]
        rng.shuffle(cards)
        return cards

    return source


def with_truth(cards: list[ModelCard], truth: ModelCard, k: int) -> list[ModelCard]:
    """The first k cards with the true card in them (it replaces the last one if absent)."""
    top = cards[:k]
    if all(card.version_id != truth.version_id for card in top):
        top = [*top[: k - 1], truth]
    return top


def sft_examples(
    catalog: Catalog,
    pairs: list[Pair],
    formats: tuple[Format, ...] = ("rank",),
    candidates: CandidateSource | None = None,
) -> Iterator[dict[str, Any]]:
    """SFT rows for every pair whose card is in the catalog, in each of the formats.

    A generate row's candidates always show the answer's card (it replaces the last one where
    the source left it out): an answer naming an unlisted card would teach hallucination.
    """
    source = candidates or random_candidates(catalog, 8)
    for pair in pairs:
        card = catalog.get(pair.version_id)
        if card is None:
            continue
        for fmt in formats:
            shown = None
            if fmt == "generate":
                listed = source(pair)
                shown = with_truth(listed, card, max(1, len(listed)))
            yield sft_example(pair, card, fmt, shown)


def write_jsonl(rows: list[dict[str, Any]], path: Path) -> Path:
    """Write rows as JSON lines (parent folders created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSON-lines file."""
    with Path(path).open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def check_groups(groups: list[dict[str, Any]]) -> int:
    """Check RRHF groups (same number of responses and scores each); return that number."""
    if not groups:
        raise ValueError("no RRHF groups; every prompt needs candidate responses")
    sizes = {len(g["responses"]) for g in groups}
    if len(sizes) != 1:
        raise ValueError(f"RRHF groups must have the same number of responses, got {sorted(sizes)}")
    for group in groups:
        if len(group["scores"]) != len(group["responses"]):
            raise ValueError(f"group {group.get('query', '')[:40]!r}: one score per response")
    return sizes.pop()
