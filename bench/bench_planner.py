"""Planner latency per prompt (plan_rank, plan_generate), p50/p95, with the embedded SmolLM2.

Run (val prompts of /tmp/catalog-full when it is READY, else the starter catalog's cards):

    .venv/bin/python bench/bench_planner.py --limit 30 --top-k 8
    .venv/bin/python bench/bench_planner.py --modes rank --limit 50 --retrieval-weight 0

Candidates come from the catalog's search index when one is built (`diffagent index build`), else
from a TF-IDF over card names, tags and keywords (same latency profile: k compact cards). Also
prints version top-1 of the rank order beside the candidate order, for orientation only.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from diffagent.agent.planner import PlannerConfig, make_backend, plan_generate, plan_rank
from diffagent.cards import ModelCard
from diffagent.index.catalog import Catalog, starter_catalog_dir

# CPU time (process_time) is printed beside wall time: on a shared machine the wall time
# includes waiting for other processes, and with one torch thread the CPU time is about what an
# idle core would take.

FULL = Path("/tmp/catalog-full")


def load_prompts(catalog: Catalog, limit: int, seed: int) -> list[tuple[str, str, int | None]]:
    """(prompt, negative, true version id) from pairs/val.jsonl, else card keywords as prompts."""
    val = catalog.directory / "pairs" / "val.jsonl"
    rows: list[tuple[str, str, int | None]] = []
    if val.is_file():
        with val.open(encoding="utf-8") as handle:
            for line in handle:
                pair = json.loads(line)
                instruction = pair["instruction"]
                rows.append(
                    (
                        instruction["prompt"],
                        instruction.get("negative_prompt", ""),
                        pair["api"].get("version_id"),
                    )
                )
    else:
        for card in catalog:
            words = [*card.trigger_words, *card.keywords[:6], *card.tags[:3]]
            rows.append((", ".join(words) or card.name, "", card.version_id))
    random.Random(seed).shuffle(rows)
    return rows[:limit]


def candidate_source(catalog: Catalog) -> tuple[str, Callable[[str, int], list[ModelCard]]]:
    """The catalog's search index when built, else a TF-IDF over compact card documents."""
    if (catalog.directory / "index" / "manifest.json").is_file():
        from diffagent.index.search import CatalogIndex

        index = CatalogIndex.from_catalog(catalog, build=False)
        return "search index", lambda text, k: [hit.card for hit in index.query(text, k)]
    from sklearn.feature_extraction.text import TfidfVectorizer

    cards = list(catalog)
    docs = [" ".join([c.name, *c.trigger_words, *c.tags, *c.keywords]) for c in cards]
    vectorizer = TfidfVectorizer(sublinear_tf=True)
    matrix = vectorizer.fit_transform(docs)

    def top(text: str, k: int) -> list[ModelCard]:
        scores = (matrix @ vectorizer.transform([text]).T).toarray().ravel()
        return [cards[i] for i in scores.argsort()[::-1][:k]]

    return "tf-idf", top


def pct(values: list[float], q: float) -> float:
    """The q-quantile (0-1) of `values`, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def main() -> None:
    """Time the planner on val prompts and print p50/p95 per mode."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalog", type=Path, default=None)
    parser.add_argument("--limit", type=int, default=30)
    parser.add_argument("--top-k", type=int, default=8)
    parser.add_argument("--modes", default="rank,generate")
    parser.add_argument("--variant-cards", type=int, default=1)
    parser.add_argument("--retrieval-weight", type=float, default=0.5)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    directory = args.catalog or (FULL if (FULL / "READY").exists() else starter_catalog_dir())
    catalog = Catalog.load(directory)
    prompts = load_prompts(catalog, args.limit, args.seed)
    source, candidates_for = candidate_source(catalog)
    print(f"catalog {directory} ({len(catalog)} cards), {len(prompts)} prompts; {source}")

    started = time.perf_counter()
    backend = make_backend(PlannerConfig(threads=args.threads))
    backend.load()  # type: ignore[attr-defined]
    print(f"load {time.perf_counter() - started:.1f} s")
    plan_rank(backend, "warm up", "", candidates_for("warm up", args.top_k), variant_cards=0)

    for mode in args.modes.split(","):
        latencies: list[float] = []
        cpu_times: list[float] = []
        hits = base_hits = parsed = grounded = 0
        for prompt, negative, truth in prompts:
            cards = candidates_for(prompt, args.top_k)
            began = time.perf_counter()
            cpu_began = time.process_time()
            if mode == "rank":
                variants = args.variant_cards
                result = plan_rank(
                    backend,
                    prompt,
                    negative,
                    cards,
                    variant_cards=variants,
                    retrieval_weight=args.retrieval_weight,
                )
                hits += result.options[0].card.version_id == truth
            else:
                out = plan_generate(
                    backend, prompt, negative, cards, max_new_tokens=args.max_new_tokens
                )
                parsed += out.api is not None
                named = out.api.get("version_id") if out.api else None
                grounded += named in {card.version_id for card in cards}
                hits += named == truth
            latencies.append(time.perf_counter() - began)
            cpu_times.append(time.process_time() - cpu_began)
            base_hits += cards[0].version_id == truth
        line = (
            f"{mode:8s} n={len(latencies)} p50 {statistics.median(latencies):.2f} s "
            f"p95 {pct(latencies, 0.95):.2f} s mean {statistics.fmean(latencies):.2f} s; "
            f"CPU time p50 {statistics.median(cpu_times):.2f} s p95 {pct(cpu_times, 0.95):.2f} s"
        )
        n = len(prompts)
        if mode == "generate":
            line += f"  JSON {parsed / n:.2f}, id in candidates {grounded / n:.2f}"
            line += f", version top-1 {hits / n:.3f} (before repair)"
        if mode == "rank":
            line += f"  version top-1 {hits / n:.3f} (candidate order {base_hits / n:.3f})"
        print(line, flush=True)


if __name__ == "__main__":
    main()
