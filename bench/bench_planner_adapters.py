"""Rank mode on top of the learned ranker: stock, SFT and RRHF planners against the ranker alone.

Run (the issue-9 figures: every test pair, the weight tuned on every held-out val pair, 1,275):

    .venv/bin/python bench/bench_planner_adapters.py --catalog /tmp/catalog-full \
        --adapter sft=/tmp/sft --adapter rrhf=agent/adapters/planner-rank \
        --work /tmp/bench-planner --json /tmp/bench-planner/figures.json

Candidates are the agent's: the ranker's top-k cards, one version per model, with the ranker's
scores, from the evaluation index that left the test images out of the evidence
(`index build --exclude-split test`). Val pairs that tuned the weight are left out of their
card's evidence (as the ranker trains) and are not the ranker's early-stopping pairs. Each
planner scores every candidate's rank-mode answer line (`plan_rank`); the option score is
ranker score + w * log-likelihood, with w chosen on val from a grid and then applied to test.
LLM scores are cached per planner and split in `--work` (a rerun resumes). Figures: model
top-1 and version top-1 on test, how often the planner changed the ranker's first card, the
planner's scoring latency p50/p95, and `rescue_rate`: where the ranker's first card is the wrong
model and the right one is among the candidates, how often the LLM scores the right one higher
(0.5 is a coin; the fusion can only gain where it is well above).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from diffagent.agent.planner import PlannerBackend, PlannerConfig, make_backend, plan_rank
from diffagent.cards import ModelCard
from diffagent.finetune.candidates import ranker_top
from diffagent.index.catalog import Catalog
from diffagent.index.search import CatalogIndex
from diffagent.index.search.ranked import split_queries, training_queries
from diffagent.index.search.ranker import RankerConfig, sample_queries

WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.75, 0.9, 1.0, 1.25, 1.5, 2.0, 3.0)
Query = tuple[str, int, int]
Candidates = list[tuple[list[ModelCard], list[float]]]


def negatives(catalog: Catalog) -> dict[int, str]:
    """Negative prompt of every pair, by image id."""
    out: dict[int, str] = {}
    for split in ("val", "test"):
        with (catalog.directory / "pairs" / f"{split}.jsonl").open(encoding="utf-8") as handle:
            for line in handle:
                row = json.loads(line)
                out[int(row["image_id"])] = str(row["instruction"].get("negative_prompt") or "")
    return out


def llm_scores(
    backend: PlannerBackend,
    queries: list[Query],
    candidates: Candidates,
    negative: dict[int, str],
    cache: Path,
    desc: str,
) -> list[dict[str, Any]]:
    """The planner's log-likelihood of each candidate, cached in `cache` (JSON lines, resumed)."""
    rows = [json.loads(line) for line in cache.open(encoding="utf-8")] if cache.is_file() else []
    cache.parent.mkdir(parents=True, exist_ok=True)
    with cache.open("a", encoding="utf-8") as handle:
        todo = list(zip(queries, candidates, strict=True))[len(rows) :]
        for (prompt, _, image_id), (cards, _) in tqdm(todo, desc=desc, file=sys.stderr):
            result = plan_rank(backend, prompt, negative.get(image_id, ""), cards, variant_cards=0)
            by_rank = {option.retrieval_rank: option.logprob for option in result.options}
            row = {
                "image_id": image_id,
                "llm": [round(by_rank[r], 5) for r in range(len(cards))],
                "ms": round(result.latency_ms, 1),
            }
            handle.write(json.dumps(row) + "\n")
            handle.flush()
            rows.append(row)
    return rows


def choices(candidates: Candidates, rows: list[dict[str, Any]], weight: float) -> list[ModelCard]:
    """The first card of each query under ranker score + weight * log-likelihood."""
    picked = []
    for (cards, scores), row in zip(candidates, rows, strict=True):
        fused = np.asarray(scores) + weight * np.asarray(row["llm"])
        picked.append(cards[int(np.argmax(fused))])  # argmax: the first of equal scores
    return picked


def accuracy(picked: list[ModelCard], queries: list[Query], catalog: Catalog) -> dict[str, float]:
    """Model top-1 and version top-1 of the picked cards."""
    model = version = 0
    for card, (_, version_id, _) in zip(picked, queries, strict=True):
        truth = catalog.cards[version_id]
        model += card.model_id == truth.model_id
        version += card.version_id == version_id
    n = max(1, len(queries))
    return {"model_top1": round(model / n, 4), "version_top1": round(version / n, 4)}


def rescue_rate(
    candidates: Candidates, rows: list[dict[str, Any]], queries: list[Query], catalog: Catalog
) -> tuple[float, int]:
    """Share of ranker misses with the right model among the candidates where the LLM prefers it.

    Returns the share and the number of such misses.
    """
    wins = cases = 0
    for (cards, _), row, (_, version_id, _) in zip(candidates, rows, queries, strict=True):
        truth = catalog.cards[version_id].model_id
        right = [i for i, card in enumerate(cards) if card.model_id == truth]
        if not right or right[0] == 0:
            continue
        cases += 1
        wins += row["llm"][right[0]] > row["llm"][0]
    return (round(wins / cases, 4) if cases else float("nan")), cases


def plot_curves(
    curves: dict[str, dict[str, list[float]]], ranker: dict[str, float], path: Path
) -> None:
    """Model top-1 against the LLM weight, val and test, one line per planner."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, split in zip(axes, ("val", "test"), strict=True):
        for name, curve in curves.items():
            ax.plot(WEIGHTS, curve[split], marker="o", label=name)
        ax.axhline(ranker[f"{'val_' if split == 'val' else ''}model_top1"], color="k", ls="--")
        ax.set_title(f"{split}: ranker alone (dashed) vs ranker + w * LLM")
        ax.set_xlabel("w (LLM log-likelihood weight)")
        ax.set_xscale("symlog", linthresh=0.1)
        ax.set_xlim(left=0)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("model top-1")
    axes[0].legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> int:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalog", type=Path, default=Path("/tmp/catalog-full"))
    parser.add_argument("--index-dir", type=Path, help="default: CATALOG/index-eval-test")
    parser.add_argument(
        "--val", type=int, default=None, help="val pairs that tune the weight (default: all)"
    )
    parser.add_argument("--test", type=int, default=None, help="test pairs (default: all)")
    parser.add_argument("--top-k", type=int, default=5, help="candidates (distinct models)")
    parser.add_argument("--no-stock", action="store_true", help="skip the stock planner")
    parser.add_argument("--adapter", action="append", default=[], help="NAME=PATH (repeatable)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench-planner"))
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--plot", type=Path, help="model top-1 against the weight, PNG")
    args = parser.parse_args()

    started = time.perf_counter()
    index = CatalogIndex.open(args.catalog, args.index_dir, exclude_split="test")
    catalog, ranked = index.catalog, index.ranked
    if ranked is None or ranked.ranker is None:
        raise SystemExit("the evaluation index has no ranker: `diffagent index build` it first")
    train_q, val_q = training_queries(ranked.index, catalog)
    stopping = set(sample_queries(val_q, RankerConfig().val_queries, RankerConfig().seed))
    val = [q for q in val_q if q not in stopping][: args.val]
    test = split_queries(catalog, "test")[: args.test]
    vectors = index.embedding_function.embed_queries([q for q, _, _ in test])
    candidates = {
        "val": ranker_top(ranked, val, args.top_k, leave_one_out=True, show_progress=True),
        "test": ranker_top(
            ranked, test, args.top_k, leave_one_out=False, vectors=vectors, show_progress=True
        ),
    }
    queries = {"val": val, "test": test}
    print(
        f"{len(val)} val and {len(test)} test pairs; candidates (top {args.top_k} models) in "
        f"{time.perf_counter() - started:.0f} s",
        file=sys.stderr,
    )
    ranker_first = {s: [cards[0] for cards, _ in candidates[s]] for s in candidates}
    results: dict[str, dict[str, float]] = {"ranker": accuracy(ranker_first["test"], test, catalog)}
    results["ranker"]["val_model_top1"] = accuracy(ranker_first["val"], val, catalog)["model_top1"]
    results["ranker"]["oracle_model_top1"] = float(
        np.mean(
            [
                catalog.cards[v].model_id in {card.model_id for card in cards}
                for (cards, _), (_, v, _) in zip(candidates["test"], test, strict=True)
            ]
        )
    )
    planners: list[tuple[str, Path | None]] = [] if args.no_stock else [("stock", None)]
    planners += [(name, Path(path)) for name, _, path in (a.partition("=") for a in args.adapter)]
    negative = negatives(catalog)
    curves: dict[str, dict[str, list[float]]] = {}
    for name, adapter in planners:
        backend = make_backend(PlannerConfig(adapter_path=adapter, threads=args.threads))
        plan_rank(backend, "warm-up prompt", "", candidates["test"][0][0][:2])
        rows = {
            split: llm_scores(
                backend,
                queries[split],
                candidates[split],
                negative,
                args.work / f"{name}-{split}.jsonl",
                f"{name} {split}",
            )
            for split in ("val", "test")
        }
        tuned = {
            w: accuracy(choices(candidates["val"], rows["val"], w), val, catalog) for w in WEIGHTS
        }
        weight = max(WEIGHTS, key=lambda w: (tuned[w]["model_top1"], -w))
        picked = choices(candidates["test"], rows["test"], weight)
        curves[name] = {
            split: [
                accuracy(choices(candidates[split], rows[split], w), queries[split], catalog)[
                    "model_top1"
                ]
                for w in WEIGHTS
            ]
            for split in ("val", "test")
        }
        latencies = [row["ms"] for row in rows["test"]]
        rescued, misses = rescue_rate(candidates["test"], rows["test"], test, catalog)
        val_rescued, _ = rescue_rate(candidates["val"], rows["val"], val, catalog)
        results[name] = {
            **accuracy(picked, test, catalog),
            "weight": weight,
            "val_model_top1": tuned[weight]["model_top1"],
            "changed_first": round(
                float(
                    np.mean([a is not b for a, b in zip(picked, ranker_first["test"], strict=True)])
                ),
                4,
            ),
            "llm_alone_model_top1": accuracy(
                choices(candidates["test"], rows["test"], 1e6), test, catalog
            )["model_top1"],
            "rescue_rate": rescued,
            "rescue_cases": misses,
            "val_rescue_rate": val_rescued,
            "plan_p50_ms": round(float(np.percentile(latencies, 50)), 1),
            "plan_p95_ms": round(float(np.percentile(latencies, 95)), 1),
        }
        print(json.dumps({name: results[name]}), file=sys.stderr)

    keys = sorted({key for row in results.values() for key in row})
    print(f"\n{'figure':<22}" + "".join(f"{name:>12}" for name in results))
    for key in keys:
        cells = "".join(f"{results[n].get(key, float('nan')):>12.4g}" for n in results)
        print(f"{key:<22}{cells}")
    print(f"\n(test: {len(test)} pairs; weight tuned on {len(val)} val pairs; top {args.top_k})")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        figures = {"top_k": args.top_k, "weights": WEIGHTS, "figures": results, "curves": curves}
        args.json.write_text(json.dumps(figures, indent=2))
    if args.plot:
        plot_curves(curves, results["ranker"], args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
