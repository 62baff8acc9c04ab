"""Table 1 of the evaluation: each planner writes APIs (generate mode); usable JSON, hallucination.

A reply is *usable JSON* when its first JSON object validates as a `T2IApi` as written (no
repair); it is a *hallucination* when the model it names matches no catalog card before repair
(paper, Table 1; a reply with no JSON object names none and counts too). Every record also keeps
the repaired API, which the image rows of Table 2 run.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from diffagent.agent.planner import PlannerBackend, plan_generate
from diffagent.agent.validate import validate_and_repair
from diffagent.api import T2IApi
from diffagent.cards import ModelCard
from diffagent.finetune.prompt_sets import EvalPrompt
from diffagent.index.catalog import Catalog

CandidateFn = Callable[[str, int], list[ModelCard]]


class PlanRecord(BaseModel):
    """One planner reply to one prompt, judged before and after repair."""

    planner: str
    prompt_set: str
    prompt_id: str
    prompt: str
    negative_prompt: str = ""
    fingerprint: str = Field(description="Planner, adapter and decoding; plans are reused by it.")
    raw_text: str
    parsed: bool = Field(description="The reply holds a JSON object.")
    usable: bool = Field(description="That object validates as a T2IApi without repair.")
    hallucinated: bool = Field(description="The named model matched no catalog card.")
    repairs: int = Field(description="Fields validation changed.")
    api: dict[str, Any] = Field(description="The repaired API (always a catalog card).")
    true_version_id: int | None = None
    candidate_ids: list[int] = Field(default_factory=list)
    latency_ms: float = 0.0


class Table1Row(BaseModel):
    """Rates of one planner on one prompt set (fractions in [0, 1])."""

    prompt_set: str
    planner: str
    n: int
    json_parsed: float
    usable_json: float
    hallucination: float = Field(description="Before repair (paper, Table 1).")
    hallucination_after_repair: float
    version_top1: float | None = Field(description="Repaired API's card is the pair's (DABench).")


def is_usable(api: dict[str, Any] | None) -> bool:
    """Whether a parsed reply is a valid T2IApi as written (the usable-JSON criterion)."""
    if api is None:
        return False
    try:
        T2IApi.model_validate(api)
    except (ValidationError, TypeError, ValueError):
        return False
    return True


def tfidf_candidates(catalog: Catalog) -> CandidateFn:
    """Top-k cards by TF-IDF over name, trigger words, tags and keywords (no prompt evidence)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    cards = list(catalog)
    docs = [" ".join([c.name, *c.trigger_words, *c.tags, *c.keywords]) for c in cards]
    vectorizer = TfidfVectorizer(sublinear_tf=True)
    matrix = vectorizer.fit_transform(docs)

    def top(text: str, k: int) -> list[ModelCard]:
        scores = (matrix @ vectorizer.transform([text]).T).toarray().ravel()
        return [cards[i] for i in scores.argsort()[::-1][:k]]

    return top


def plan_prompt(
    backend: PlannerBackend,
    planner: str,
    fingerprint: str,
    prompt_set: str,
    item: EvalPrompt,
    candidates: list[ModelCard],
    catalog: Catalog,
    *,
    max_new_tokens: int,
) -> PlanRecord:
    """Ask one planner for one prompt's API and judge the reply."""
    result = plan_generate(
        backend, item.prompt, item.negative_prompt, candidates, max_new_tokens=max_new_tokens
    )
    checked = validate_and_repair(result.api, catalog)
    return PlanRecord(
        planner=planner,
        prompt_set=prompt_set,
        prompt_id=item.id,
        prompt=item.prompt,
        negative_prompt=item.negative_prompt,
        fingerprint=fingerprint,
        raw_text=result.raw_text,
        parsed=result.api is not None,
        usable=is_usable(result.api),
        hallucinated=checked.hallucinated,
        repairs=len(checked.repairs),
        api=checked.api.model_dump(),
        true_version_id=item.version_id,
        candidate_ids=[card.version_id for card in candidates],
        latency_ms=result.latency_ms,
    )


def read_plans(path: Path) -> list[PlanRecord]:
    """Plan records saved by an earlier run (none when the file is absent)."""
    if not path.is_file():
        return []
    with path.open(encoding="utf-8") as handle:
        return [PlanRecord.model_validate_json(line) for line in handle if line.strip()]


def run_plans(
    backend_factory: Callable[[], PlannerBackend],
    planner: str,
    fingerprint: str,
    prompt_set: str,
    prompts: list[EvalPrompt],
    catalog: Catalog,
    candidates_for: CandidateFn,
    plans_path: Path,
    *,
    top_k: int = 8,
    max_new_tokens: int = 128,
    progress: Callable[[str], None] | None = None,
) -> list[PlanRecord]:
    """Plan every prompt, reusing records of the same planner fingerprint in `plans_path`.

    New records are appended as they come, so an interrupted run resumes where it stopped.
    The backend is built only when some prompt still needs a plan.
    """
    known = {
        (r.prompt_id, r.prompt): r for r in read_plans(plans_path) if r.fingerprint == fingerprint
    }
    backend: PlannerBackend | None = None
    records: list[PlanRecord] = []
    plans_path.parent.mkdir(parents=True, exist_ok=True)
    for number, item in enumerate(prompts, start=1):
        record = known.get((item.id, item.prompt))
        if record is None:
            backend = backend or backend_factory()
            cards = candidates_for(item.prompt, top_k)
            record = plan_prompt(
                backend,
                planner,
                fingerprint,
                prompt_set,
                item,
                cards,
                catalog,
                max_new_tokens=max_new_tokens,
            )
            with plans_path.open("a", encoding="utf-8") as handle:
                handle.write(record.model_dump_json() + "\n")
            if progress is not None:
                progress(
                    f"{prompt_set} {planner} {number}/{len(prompts)}: usable={record.usable} "
                    f"hallucinated={record.hallucinated} {record.latency_ms / 1000:.1f} s"
                )
        records.append(record)
    return records


def table1_row(
    prompt_set: str, planner: str, records: list[PlanRecord], catalog: Catalog
) -> Table1Row:
    """Aggregate one planner's records on one prompt set."""
    if not records:
        raise ValueError(f"no plans for {planner} on {prompt_set}")
    n = len(records)
    truths = [r for r in records if r.true_version_id is not None]
    after = sum(catalog.get(int(r.api.get("version_id") or -1)) is None for r in records)
    return Table1Row(
        prompt_set=prompt_set,
        planner=planner,
        n=n,
        json_parsed=sum(r.parsed for r in records) / n,
        usable_json=sum(r.usable for r in records) / n,
        hallucination=sum(r.hallucinated for r in records) / n,
        hallucination_after_repair=after / n,
        version_top1=(
            sum(r.api.get("version_id") == r.true_version_id for r in truths) / len(truths)
            if truths
            else None
        ),
    )


def fingerprint_of(planner: str, config: dict[str, Any]) -> str:
    """A stable text naming the planner and everything that changes its replies."""
    return planner + ":" + json.dumps(config, sort_keys=True, default=str)
