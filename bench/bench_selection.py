"""Selection quality: evidence index + learned ranker against a plain TF-IDF, on a held-out split.

Everything in one run, on the same cards and the same evidence rules: the evaluation index
leaves the split's images out of the prompt evidence (`index build --exclude-split SPLIT`), and
so does the baseline.

    .venv/bin/python bench/bench_selection.py --catalog /tmp/catalog-full [--split test] \
        [--ablation] [--plot docs/selection-topk.png] [--expand 10]

Prints model top-1 / top-5 (distinct models) and version top-1 of
- `tfidf`: scikit-learn TfidfVectorizer (word 1-2-grams, sublinear tf), cosine, one document per
  version = model name, tags, trained words and every SFW sample prompt of the version, LoRA tags
  stripped (the baseline of issue 8);
- `first stage`: BM25 + TF-IDF over each card's whole text and collapsed evidence;
- `ranker`: the LightGBM lambdarank ranker of the index (as `diffagent select` uses it);
then, with `--ablation`, the ranker retrained without each feature group; a top-k accuracy plot;
and query latency at the catalog's size and at `--expand` times that (tiled copies).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfVectorizer

from diffagent.index.catalog import Catalog
from diffagent.index.search import CatalogIndex
from diffagent.index.search.evidence import split_image_ids
from diffagent.index.search.evidence_index import EvidenceIndex
from diffagent.index.search.features import FEATURE_GROUPS, FEATURES
from diffagent.index.search.ranked import RankedSearch, split_queries, training_queries
from diffagent.index.search.ranker import (
    Ranker,
    RankerConfig,
    RankingData,
    ranking_data,
    sample_queries,
    train_ranker,
)

KS = (1, 2, 3, 5, 10, 20)


def topk_models(version_lists: list[list[int]], catalog: Catalog, k: int) -> list[list[int]]:
    """The first k distinct model ids of each ranked version list."""
    out = []
    for versions in version_lists:
        models: list[int] = []
        for version_id in versions:
            model_id = catalog.cards[version_id].model_id
            if model_id not in models:
                models.append(model_id)
            if len(models) == k:
                break
        out.append(models)
    return out


def metrics(
    version_lists: list[list[int]], queries: list[tuple[str, int, int]], catalog: Catalog
) -> dict[str, float]:
    """Model top-k for KS (distinct models) and version top-1."""
    truth_models = [catalog.cards[v].model_id for _, v, _ in queries]
    models = topk_models(version_lists, catalog, max(KS))
    out = {
        f"model_top{k}": float(
            np.mean([t in m[:k] for t, m in zip(truth_models, models, strict=True)])
        )
        for k in KS
    }
    out["version_top1"] = float(
        np.mean(
            [bool(v) and v[0] == t for v, (_, t, _) in zip(version_lists, queries, strict=True)]
        )
    )
    return {key: round(value, 4) for key, value in out.items()}


def tfidf_baseline(
    catalog: Catalog, queries: list[tuple[str, int, int]], excluded: frozenset[int]
) -> list[list[int]]:
    """The issue's TF-IDF baseline, with the split's images left out of the evidence."""
    from diffagent.index.catalog import iter_evidence

    prompts = {
        v: [p for i, p in items if i not in excluded]
        for v, items in iter_evidence(catalog.directory)
    }
    cards = sorted(catalog, key=lambda card: card.version_id)
    documents = [
        " ".join(
            [
                card.name,
                " ".join(card.tags),
                " ".join(card.trigger_words),
                *prompts.get(card.version_id, []),
            ]
        )
        for card in cards
    ]
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    matrix = vectorizer.fit_transform(documents)
    ids = np.asarray([card.version_id for card in cards])
    ranked = []
    for start in range(0, len(queries), 256):
        block = vectorizer.transform([q for q, _, _ in queries[start : start + 256]]) @ matrix.T
        scores = block.toarray()
        top = np.argsort(-scores, axis=1, kind="stable")[:, : max(KS) * 3]
        ranked.extend(ids[row].tolist() for row in top)
    return ranked


def ranker_lists(data: RankingData, scores: np.ndarray, index_cards: list) -> list[list[int]]:
    """Version ids of each query's candidates sorted by `scores`."""
    out, offset = [], 0
    for rows, size in zip(data.candidates, data.groups, strict=True):
        order = np.argsort(-scores[offset : offset + size], kind="stable")
        out.append([index_cards[rows[i]].version_id for i in order])
        offset += size
    return out


def expanded(index: EvidenceIndex, copies: int) -> EvidenceIndex:
    """The index tiled `copies` times: every card and posting list repeated (timing only).

    Tiling keeps per-card statistics and multiplies posting-list lengths, the cost driver of the
    first stage; scores are copies, so only the time of a query means anything.
    """

    def tile(matrix: sp.spmatrix) -> sp.csc_matrix:
        return sp.vstack([matrix] * copies).tocsc()

    fields = {}
    for name, field in index.fields.items():
        fields[name] = dataclasses.replace(
            field,
            weights=tile(field.weights),
            lengths=np.tile(field.lengths, copies),
            counts=sp.vstack([field.counts] * copies).tocsr(),
        )
    n, n_models = len(index.cards), index.n_models
    lengths = np.diff(index.evidence_ptr)
    return dataclasses.replace(
        index,
        cards=index.cards * copies,
        fields=fields,
        tfidf=tile(index.tfidf),
        model_of=np.concatenate([index.model_of + k * n_models for k in range(copies)]),
        n_models=n_models * copies,
        meta=np.tile(index.meta, (copies, 1)),
        evidence_ptr=np.concatenate([[0], np.cumsum(np.tile(lengths, copies))]),
        evidence_rows=np.tile(index.evidence_rows, copies),
        evidence_owner=np.concatenate([index.evidence_owner + k * n for k in range(copies)]),
        evidence_tfidf=tile(index.evidence_tfidf),
        trigger_phrases=index.trigger_phrases * copies,
        card_vectors=None
        if index.card_vectors is None
        else np.tile(index.card_vectors, (copies, 1)),
    )


def timed_queries(
    index: EvidenceIndex, ranker: Ranker, prompts: list[str], embed: Callable[[str], np.ndarray]
) -> dict[str, float]:
    """p50/p95 milliseconds of the production query path over `index`.

    As `CatalogIndex.query` does it: the prompt is embedded in a worker thread while the first
    stage runs, then the features (dense included) and the ranker.
    """
    search = RankedSearch(index, ranker, digest="timing")
    latencies = []
    with ThreadPoolExecutor(max_workers=1) as pool:
        for prompt in prompts:
            tick = time.perf_counter()
            pending = pool.submit(embed, prompt) if search.uses_dense else None
            search.search(prompt, 10, base_model=None, model_type=None, pending=pending)
            latencies.append((time.perf_counter() - tick) * 1000)
    return {"p50": round(percentile(latencies, 50), 1), "p95": round(percentile(latencies, 95), 1)}


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100)."""
    return float(np.percentile(values, q)) if values else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalog", type=Path, default=Path("/tmp/catalog-full"))
    parser.add_argument("--split", default="test", choices=["val", "test"])
    parser.add_argument("--index-dir", type=Path, help="default: CATALOG/index-eval-SPLIT")
    parser.add_argument("--ablation", action="store_true", help="retrain without each group")
    parser.add_argument("--plot", type=Path, help="write the top-k accuracy plot (PNG) here")
    parser.add_argument("--latency-queries", type=int, default=300)
    parser.add_argument(
        "--expand", type=int, default=10, help="also time an index tiled this many times (0: no)"
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--threads", type=int, default=2, help="LightGBM threads for the ablation (1 on busy cores)"
    )
    args = parser.parse_args()

    started = time.perf_counter()
    index = CatalogIndex.open(args.catalog, args.index_dir, exclude_split=args.split)
    catalog = index.catalog
    assert index.ranked is not None, "the catalog has no evidence.jsonl: rebuild it"
    print(
        f"index {index.index_dir} (evidence without the {args.split} images) ready in "
        f"{time.perf_counter() - started:.1f} s; ranker: {index.ranked.ranker is not None}"
    )
    queries = split_queries(catalog, args.split)
    excluded = split_image_ids(catalog.directory, args.split)
    figures: dict[str, dict[str, float]] = {}
    lists: dict[str, list[list[int]]] = {}

    lists["tfidf"] = tfidf_baseline(catalog, queries, excluded)
    evidence_index = index.ranked.index
    vectors = None
    if index.ranked.uses_dense:
        vectors = index.embedding_function.embed_queries([q for q, _, _ in queries])
    test = ranking_data(
        evidence_index, queries, leave_one_out=False, desc=f"{args.split} features", vectors=vectors
    )
    first = np.concatenate(
        [-np.arange(size, dtype=np.float64) for size in test.groups]
    )  # candidates come in first-stage order
    lists["first stage"] = ranker_lists(test, first, evidence_index.cards)
    ranker = index.ranked.ranker
    assert ranker is not None
    lists["ranker"] = ranker_lists(test, ranker.score(test.features), evidence_index.cards)
    for name, version_lists in lists.items():
        figures[name] = metrics(version_lists, queries, catalog)
    recall = np.mean(
        [
            v in {evidence_index.cards[r].version_id for r in rows}
            for rows, (_, v, _) in zip(test.candidates, queries, strict=True)
        ]
    )
    print(
        f"\n{args.split}: {len(queries)} pairs; first-stage candidates hold the true version "
        f"for {recall:.3f} of them (mean {np.mean(test.groups):.0f} candidates)"
    )
    keys = ["model_top1", "model_top5", "version_top1"]
    print(f"{'method':<14}" + "".join(f"{k:>14}" for k in keys))
    for name, row in figures.items():
        print(f"{name:<14}" + "".join(f"{row[k]:>14.4f}" for k in keys))
    ratio = figures["ranker"]["model_top1"] / max(figures["tfidf"]["model_top1"], 1e-9)
    print(f"ranker / tfidf model top-1: {ratio:.3f}x")

    if args.ablation:
        train_q, val_q = training_queries(evidence_index, catalog)
        config = RankerConfig(threads=args.threads)
        train = ranking_data(
            evidence_index,
            sample_queries(train_q, config.train_queries, 0),
            leave_one_out=True,
            desc="train features",
        )
        val = ranking_data(
            evidence_index,
            sample_queries(val_q, config.val_queries, 0),
            leave_one_out=True,
            desc="val features",
        )
        print(f"\nablation ({len(train.groups)} train queries, {len(val.groups)} val)")
        print(f"{'features':<22}{'model_top1':>12}{'version_top1':>14}")
        for group in ["none", *FEATURE_GROUPS]:
            kept = tuple(f for f in FEATURES if group == "none" or f not in FEATURE_GROUPS[group])
            booster = train_ranker(train, val, config.model_copy(update={"features": kept}))
            columns = [FEATURES.index(f) for f in kept]
            scores = booster.predict(test.features[:, columns], num_threads=1)
            row = metrics(ranker_lists(test, scores, evidence_index.cards), queries, catalog)
            label = "all" if group == "none" else f"- {group}"
            figures[f"ablation {label}"] = row
            print(f"{label:<22}{row['model_top1']:>12.4f}{row['version_top1']:>14.4f}")

    latencies = []
    for prompt, _, _ in queries[: args.latency_queries]:
        tick = time.perf_counter()
        index.query(prompt, 10)
        latencies.append((time.perf_counter() - tick) * 1000)
    figures["latency_ms"] = {
        "p50": round(percentile(latencies, 50), 1),
        "p95": round(percentile(latencies, 95), 1),
    }
    embedding = []
    for prompt, _, _ in queries[: args.latency_queries]:
        tick = time.perf_counter()
        index.embedding_function.embed_queries([prompt])
        embedding.append((time.perf_counter() - tick) * 1000)
    figures["embedding_ms"] = {
        "p50": round(percentile(embedding, 50), 1),
        "p95": round(percentile(embedding, 95), 1),
    }
    print(
        f"\nquery latency at {len(catalog)} cards (retrieval + ranking, k=10): "
        f"p50 {figures['latency_ms']['p50']} ms, p95 {figures['latency_ms']['p95']} ms; "
        f"of which the prompt embedding alone ({index.embedding_function.backend}, run in a "
        f"thread beside the first stage): p50 {figures['embedding_ms']['p50']} ms, "
        f"p95 {figures['embedding_ms']['p95']} ms"
    )

    if args.expand > 1:
        big = expanded(evidence_index, args.expand)
        prompts = [prompt for prompt, _, _ in queries[: args.latency_queries]]
        figures["latency_ms_expanded"] = timed_queries(
            big, ranker, prompts, lambda text: index.embedding_function.embed_queries([text])[0]
        )
        print(
            f"retrieval + ranking at {len(big.cards)} cards (the index tiled {args.expand}x): "
            f"p50 {figures['latency_ms_expanded']['p50']} ms, "
            f"p95 {figures['latency_ms_expanded']['p95']} ms"
        )
        del big

    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        for name in ("tfidf", "first stage", "ranker"):
            ax.plot(KS, [figures[name][f"model_top{k}"] for k in KS], marker="o", label=name)
        ax.set_xlabel("k")
        ax.set_ylabel("model in top k")
        ax.set_title(f"Model top-k accuracy, {args.split} split ({len(queries)} prompts)")
        ax.set_xscale("log")
        ax.set_xticks(KS, [str(k) for k in KS])
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.plot, dpi=120)
        print(f"wrote {args.plot}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2), encoding="utf-8")
    index.close()
    print(f"total {statistics.fmean([time.perf_counter() - started]):.0f} s")


if __name__ == "__main__":
    main()
