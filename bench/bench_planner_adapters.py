"""Rank mode with planner adapters vs the candidate source alone, on held-out pairs.

Run (stock planner, SFT and RRHF adapters, 200 test pairs, the ranked index as candidates):

    .venv/bin/python bench/bench_planner_adapters.py --catalog /tmp/catalog-full \
        --index-dir /tmp/catalog-full/index-eval-test --split test --limit 200 \
        --adapter sft=agent/adapters/planner-rank --adapter rrhf=/tmp/rrhf

Candidates are the ranked index's top-k (an evaluation index that left the split's images out),
or, without --index-dir, the ranker's lexical first stage over evidence without the test split's
images. For every planner the same candidates are scored by `plan_rank` (LLM log-likelihood
minus rank_prior * ln(1 + retrieval rank), as in the agent); figures: model top-1, version top-1,
how often the planner changed the source's first card, and plan latency p50/p95.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from math import log1p
from pathlib import Path
from typing import Any

from tqdm import tqdm

from diffagent.agent.planner import PlannerConfig, make_backend, plan_rank
from diffagent.cards import ModelCard
from diffagent.index.catalog import Catalog


def read_split(catalog: Catalog, split: str, limit: int, seed: int) -> list[dict[str, Any]]:
    """A seeded sample of a split's pairs whose card is in the catalog."""
    rows = []
    path = catalog.directory / "pairs" / f"{split}.jsonl"
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            version_id = row.get("api", {}).get("version_id")
            if row.get("instruction", {}).get("prompt") and catalog.get(version_id or -1):
                rows.append(row)
    return random.Random(seed).sample(rows, min(limit, len(rows)))


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def main() -> int:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalog", type=Path, required=True)
    parser.add_argument("--index-dir", type=Path, help="ranked index (else the first stage)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--top-k", type=int, default=8)
    parser.add_argument(
        "--rank-priors", default="2.0", help="comma-separated rank_prior values (one LLM pass)"
    )
    parser.add_argument("--no-stock", action="store_true", help="skip the stock planner")
    parser.add_argument("--adapter", action="append", default=[], help="NAME=PATH (repeatable)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    priors = [float(v) for v in args.rank_priors.split(",") if v.strip()]
    catalog = Catalog.load(args.catalog)
    pairs = read_split(catalog, args.split, args.limit, args.seed)
    source = "ranker" if args.index_dir else "first stage"
    candidates: list[list[ModelCard]] = []
    started = time.perf_counter()
    if args.index_dir:
        from diffagent.index.search import CatalogIndex

        with CatalogIndex.open(args.catalog, args.index_dir) as index:
            for pair in tqdm(pairs, desc="candidates", file=sys.stderr):
                hits = index.query(pair["instruction"]["prompt"], args.top_k)
                candidates.append([hit.card for hit in hits])
    else:
        from diffagent.finetune.candidates import first_stage_source
        from diffagent.finetune.data import Pair

        first = first_stage_source(catalog, args.top_k)
        for pair in tqdm(pairs, desc="candidates", file=sys.stderr):
            prompt = pair["instruction"]["prompt"]
            candidates.append(first(Pair(prompt, "", int(pair["api"]["version_id"]), -1, {})))
    print(
        f"{len(pairs)} {args.split} pairs; candidates ({source}) in "
        f"{time.perf_counter() - started:.0f} s",
        file=sys.stderr,
    )

    def figures(orders: list[list[ModelCard]], latencies: list[float]) -> dict[str, float]:
        model1 = version1 = changed = 0
        for pair, order, cards in zip(pairs, orders, candidates, strict=True):
            truth = catalog.get(int(pair["api"]["version_id"]))
            assert truth is not None
            if order:
                model1 += order[0].model_id == truth.model_id
                version1 += order[0].version_id == truth.version_id
                changed += order[0].version_id != cards[0].version_id
        n = max(1, len(pairs))
        row = {"n": float(len(pairs)), "model_top1": model1 / n, "version_top1": version1 / n}
        row["changed_first"] = changed / n
        if latencies:
            row["plan_p50_ms"] = percentile(latencies, 50)
            row["plan_p95_ms"] = percentile(latencies, 95)
        return row

    results = {source: figures(candidates, [])}
    planners: list[tuple[str, Path | None]] = [] if args.no_stock else [("stock", None)]
    for item in args.adapter:
        name, _, path = item.partition("=")
        planners.append((name, Path(path)))
    for name, adapter in planners:
        backend = make_backend(PlannerConfig(adapter_path=adapter, threads=args.threads))
        plan_rank(backend, "warm-up prompt", "", candidates[0][:2])
        scored, latencies = [], []
        for pair, cards in tqdm(list(zip(pairs, candidates, strict=True)), desc=name):
            result = plan_rank(
                backend,
                pair["instruction"]["prompt"],
                pair["instruction"].get("negative_prompt", ""),
                cards,
            )
            scored.append([(o.logprob, o.retrieval_rank) for o in result.options])
            latencies.append(result.latency_ms)
        for prior in priors:
            # The same fused score as plan_rank's: logprob - prior * ln(1 + retrieval rank).
            orders = [
                [
                    cards[r]
                    for _, r in sorted(rows, key=lambda x: (-(x[0] - prior * log1p(x[1])), x[1]))
                ]
                for rows, cards in zip(scored, candidates, strict=True)
            ]
            key = f"{name} p={prior:g}"
            results[key] = figures(orders, latencies)
            print(json.dumps({key: results[key]}), file=sys.stderr)

    names = list(next(iter(results.values())))
    print(f"\n{'figure':<16}" + "".join(f"{m:>16}" for m in results))
    for key in names:
        print(
            f"{key:<16}" + "".join(f"{results[m].get(key, float('nan')):>16.3f}" for m in results)
        )
    print(f"\n(n={len(pairs)} {args.split} pairs, top_k={args.top_k}, p = rank_prior)")
    if args.json:
        args.json.write_text(json.dumps({"source": source, "figures": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
