"""Retrieval quality: Recall@1/5/10 of the true model version for held-out instruction prompts.

Compares, in one run over the same card documents: the fused hybrid index (weights as tuned at
build time on a sample of the val split), its dense channel alone (Chroma + MiniLM), its lexical
channel alone (BM25), and a TF-IDF baseline (scikit-learn, cosine) over the lexical documents,
with scikit-learn's word unigrams (`tfidf`) and, since the BM25 channel indexes adjacent-word
bigrams too, with unigrams + bigrams (`tfidf12`).

    .venv/bin/python bench/bench_retrieval.py --catalog /tmp/catalog-full \
        --index-dir /tmp/search-bench/index-10k [--splits val test] [--limit 1000]

The fusion weights are tuned on at most 400 val pairs, so the test split is the clean figure.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer

from diffagent.index.search import CatalogIndex, lexical_document, load_pairs, train_prompts
from diffagent.index.search.evaluation import dense_only, lexical_only, query_with_vector

KS = (1, 5, 10)


def recall(ranked: list[list[int]], truth: list[int]) -> dict[str, float]:
    """Recall@k: share of queries whose true version is among the first k."""
    return {
        f"R@{k}": round(float(np.mean([t in r[:k] for r, t in zip(ranked, truth, strict=True)])), 4)
        for k in KS
    }


def tfidf_rank(index: CatalogIndex, prompts: list[str], k: int, ngrams: int = 1) -> list[list[int]]:
    """TF-IDF baseline over the same lexical card documents (with the same train prompts)."""
    cards = list(index.catalog)
    ids = np.array([card.version_id for card in cards])
    evidence = train_prompts(index.catalog)
    vectorizer = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, ngrams))
    docs = vectorizer.fit_transform(
        [lexical_document(card, evidence.get(card.version_id, [])) for card in cards]
    )
    queries = vectorizer.transform(prompts)
    sims = (queries @ docs.T).toarray()
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return [ids[row].tolist() for row in order]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalog", type=Path, default=Path("/tmp/catalog-full"))
    parser.add_argument("--index-dir", type=Path, default=None)
    parser.add_argument("--splits", nargs="+", default=["val", "test"])
    parser.add_argument(
        "--limit", type=int, default=1000, help="Pairs per split (seeded sample; 0 = all)."
    )
    parser.add_argument("--json", type=Path, default=None, help="Also write results here.")
    args = parser.parse_args()

    index = CatalogIndex.open(args.catalog, args.index_dir)
    print(f"catalog: {len(index.catalog)} cards; fusion weights: {index.weights.vector().tolist()}")
    results: dict[str, dict[str, dict[str, float]]] = {}
    for split in args.splits:
        pairs = load_pairs(
            args.catalog / "pairs" / f"{split}.jsonl", index.catalog, limit=args.limit or None
        )
        prompts = [p for p, _ in pairs]
        truth = [t for _, t in pairs]
        start = time.perf_counter()
        vectors = index.embedding_function.embed_queries(prompts, show_progress=True)
        embed_s = time.perf_counter() - start
        fused = [
            [h.card.version_id for h in query_with_vector(index, p, v, 10)]
            for p, v in zip(prompts, vectors, strict=True)
        ]
        dense = [dense_only(index, v, 10) for v in vectors]
        lexical = [lexical_only(index, p, 10) for p in prompts]
        results[split] = {
            "fused": recall(fused, truth),
            "dense": recall(dense, truth),
            "lexical": recall(lexical, truth),
            "tfidf": recall(tfidf_rank(index, prompts, 10), truth),
            "tfidf12": recall(tfidf_rank(index, prompts, 10, ngrams=2), truth),
        }
        print(f"\n{split}: {len(pairs)} pairs (prompt embedding {embed_s:.1f} s)")
        print(f"{'method':10s} " + " ".join(f"{f'R@{k}':>6s}" for k in KS))
        for method, figures in results[split].items():
            print(f"{method:10s} " + " ".join(f"{figures[f'R@{k}']:6.3f}" for k in KS))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
