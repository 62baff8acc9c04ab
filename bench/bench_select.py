"""Selection benchmark on a catalog's val split: accuracy per mode, hallucination, latency.

Run (a few minutes with --limit 100 on 2 CPU cores):

    .venv/bin/python bench/bench_select.py --catalog /tmp/catalog-full --limit 100

Prints, in one run, model top-1/top-5 and version top-1 for the retrieval-only baseline (the
index's ranking), `rank` (over a learned ranker: ranker score + --llm-weight * the LLM's
log-likelihood; else the log-likelihood plus the retrieval prior), `rank-llm` (the LLM alone)
and `generate`; the hallucination rate of `generate` before repair and after (0 by
construction, checked here); and select latency p50/p95 per mode with the planner.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from diffagent.agent.planner import PlannerConfig, make_backend
from diffagent.agent.service import DiffAgent
from diffagent.agent.settings import IndexSettings, PathSettings, Settings
from diffagent.index.search import CatalogIndex


def read_pairs(path: Path, limit: int | None, seed: int) -> list[dict[str, Any]]:
    """Pairs with a prompt and a ground-truth version id; a seeded sample of `limit`."""
    rows = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            if row.get("instruction", {}).get("prompt") and row.get("api", {}).get("version_id"):
                rows.append(row)
    if limit is not None and len(rows) > limit:
        rows = random.Random(seed).sample(rows, limit)
    return rows


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def main() -> int:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalog", type=Path, default=Path("/tmp/catalog-full"))
    parser.add_argument("--index-dir", type=Path, help="an existing index of the catalog")
    parser.add_argument("--split", default="val")
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--generate-limit", type=int, help="fewer pairs for generate (slow)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--top-k", type=int, default=8)
    parser.add_argument(
        "--modes",
        default="retrieval,rank,rank-llm,generate",
        help="rank-llm is rank with --rank-prior 0 (the LLM's log-likelihood alone)",
    )
    parser.add_argument("--rank-prior", type=float, default=2.0)
    parser.add_argument(
        "--llm-weight",
        type=float,
        default=PlannerConfig().llm_weight,
        help="rank mode over a learned ranker's scores",
    )
    parser.add_argument("--planner", choices=["embedded", "openai"], default="embedded")
    parser.add_argument("--base-url")
    parser.add_argument("--adapter", type=Path)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    start = time.perf_counter()
    index = CatalogIndex.open(args.catalog, args.index_dir)
    print(f"index: {len(index.catalog)} cards, opened in {time.perf_counter() - start:.1f} s")
    pairs = read_pairs(args.catalog / "pairs" / f"{args.split}.jsonl", args.limit, args.seed)
    pairs = [p for p in pairs if index.catalog.get(int(p["api"]["version_id"])) is not None]
    print(f"{args.split}: {len(pairs)} pairs with a card in the catalog")

    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    planner = PlannerConfig(backend=args.planner, base_url=args.base_url, adapter_path=args.adapter)
    backend = make_backend(planner) if set(modes) - {"retrieval"} else None
    figures: dict[str, dict[str, float]] = {}
    for mode in modes:
        config = Settings(
            index=IndexSettings(catalog_dir=args.catalog, top_k=args.top_k),
            planner=planner.model_copy(
                update={
                    "mode": "rank" if mode == "rank-llm" else mode,
                    "rank_prior": 0.0 if mode == "rank-llm" else args.rank_prior,
                    "llm_weight": 1e6 if mode == "rank-llm" else args.llm_weight,
                }
            ),
            paths=PathSettings(ephemeral=True),
        )
        agent = DiffAgent.create(config, backend=backend, index=index)
        if backend is not None and mode != "retrieval":
            agent.select("warm-up prompt")  # loads the planner once, outside the timings
        model1 = model5 = version1 = halluc = invalid = failed = either = 0
        latencies = []
        run = pairs[: args.generate_limit] if mode == "generate" else pairs
        for pair in tqdm(run, desc=mode, unit="prompt", file=sys.stderr):
            truth = index.catalog.get(int(pair["api"]["version_id"]))
            assert truth is not None
            result = agent.select(
                pair["instruction"]["prompt"], pair["instruction"].get("negative_prompt", "")
            )
            latencies.append(result.latency_ms)
            ranked = [c for v in result.ranking if (c := index.catalog.get(v)) is not None]
            models = list(dict.fromkeys(card.model_id for card in ranked))
            model1 += bool(models) and models[0] == truth.model_id
            model5 += truth.model_id in models[:5]
            version1 += bool(ranked) and ranked[0].version_id == truth.version_id
            halluc += result.hallucinated
            failed += result.plan_error is not None
            either += result.hallucinated or result.plan_error is not None
            invalid += result.api is None or index.catalog.get(result.api.version_id or -1) is None
        n = max(1, len(run))
        figures[mode] = {
            "n": float(len(run)),
            "model_top1": model1 / n,
            "model_top5": model5 / n,
            "version_top1": version1 / n,
            "hallucination_before_repair": halluc / n,
            "hallucination_after_repair": invalid / n,
            "planner_output_unusable": failed / n,
            "hallucinated_or_unusable": either / n,
            "latency_p50_ms": percentile(latencies, 50) if latencies else 0.0,
            "latency_p95_ms": percentile(latencies, 95) if latencies else 0.0,
            "latency_mean_ms": statistics.fmean(latencies) if latencies else 0.0,
        }

    names = list(next(iter(figures.values())))
    print(f"\n{'figure':<30}" + "".join(f"{m:>12}" for m in figures))
    for name in names:
        cells = "".join(f"{figures[m][name]:>12.3f}" for m in figures)
        print(f"{name:<30}{cells}")
    print(f"\n(n={len(pairs)} {args.split} pairs, top_k={args.top_k}, planner={args.planner})")
    if args.json:
        args.json.write_text(json.dumps({"n": len(pairs), "figures": figures}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
