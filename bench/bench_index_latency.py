"""Query latency of the hybrid index (p50/p95) at the real catalog size and at 100k cards.

    .venv/bin/python bench/bench_index_latency.py --catalog /tmp/catalog-full \
        --index-dir /tmp/search-bench/index-10k [--sizes 100000] [--queries 200]

The real index (about 10k cards) must be built first (`diffagent index build`). The 100k index is
a synthetic expansion, not 100k embedded texts (MiniLM embeds ~40 documents/s here): every real
card is copied with a new version id; each copy's embedding is the real one plus Gaussian noise
(sigma 0.025 per dimension, cosine to the original about 0.9, re-normalised) and its lexical
document is the real one with 30% of the tokens dropped and 5 tokens drawn from the vocabulary
added. The copies go through the same Chroma collection, BM25 index and query code as real cards;
the expansion is cached under --work and rebuilt only when missing or made with other BM25 terms
(it always takes the real index's current fusion weights).

Reported: end-to-end `CatalogIndex.query` time (prompt embedding, in a thread while BM25 scores,
+ both channels + fusion), and the same without the prompt embedding (`query_with_vector`), over
val prompts, unfiltered and with a base-model + type filter.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from diffagent.cards import ModelCard
from diffagent.index.catalog import Catalog
from diffagent.index.search import (
    CHROMA_DIR,
    FUSION_FILE,
    LEXICAL_DIR,
    MANIFEST_FILE,
    CatalogIndex,
    IndexManifest,
    lexical_document,
    load_pairs,
    train_prompts,
)
from diffagent.index.search.dense import DenseChannel
from diffagent.index.search.evaluation import query_with_vector
from diffagent.index.search.lexical import CONFIG as LEXICAL_CONFIG
from diffagent.index.search.lexical import LexicalIndex, tokenize

NOISE_SIGMA = 0.025
DROP = 0.3
ADD_TOKENS = 5
ID_STRIDE = 10_000_000  # copy j of version v gets id v + j * ID_STRIDE


def expand(real: CatalogIndex, size: int, work: Path, seed: int = 0) -> CatalogIndex:
    """A synthetic index of `size` cards made from perturbed copies of the real ones."""
    rng = np.random.default_rng(seed)
    cards = sorted(real.catalog, key=lambda card: card.version_id)
    copies = -(-size // len(cards))
    catalog = Catalog(directory=work / "catalog")
    expanded: list[ModelCard] = []
    for j in range(copies):
        for card in cards:
            if len(expanded) == size:
                break
            if j == 0:
                expanded.append(card)
            else:
                expanded.append(
                    card.model_copy(
                        update={
                            "version_id": card.version_id + j * ID_STRIDE,
                            "name": f"{card.name} copy {j}",
                        }
                    )
                )
    for card in expanded:
        catalog.add(card)
    index_dir = work / f"index-{size}"
    ready = index_dir / MANIFEST_FILE
    if ready.is_file():
        manifest = IndexManifest.model_validate_json(ready.read_text())
        if manifest.cards == size and manifest.lexical_digest == LEXICAL_CONFIG:
            # The real index's current weights (they change when it is re-tuned).
            shutil.copy(real.index_dir / FUSION_FILE, index_dir / FUSION_FILE)
            return CatalogIndex.from_catalog(catalog, index_dir, build=False)

    shutil.rmtree(index_dir, ignore_errors=True)
    index_dir.mkdir(parents=True)
    evidence = train_prompts(real.catalog)
    tokens = {
        card.version_id: tokenize(lexical_document(card, evidence.get(card.version_id, [])))
        for card in cards
    }
    vocabulary = np.array(sorted({t for doc in tokens.values() for t in doc}))
    stored = real.collection.get(include=["embeddings"])
    vectors = {
        int(i): np.asarray(v, np.float32)
        for i, v in zip(stored["ids"], stored["embeddings"], strict=True)
    }
    ids, docs = [], []
    dense = DenseChannel(index_dir / CHROMA_DIR, real.embedding_function)
    collection = dense.collection
    batch: tuple[list[str], list[np.ndarray], list[dict[str, str]]] = ([], [], [])
    for card in tqdm(expanded, desc=f"expanding to {size}", unit="card"):
        original = card.version_id % ID_STRIDE
        base_tokens = tokens[original]
        vector = vectors[original]
        if card.version_id != original:
            keep = rng.random(len(base_tokens)) >= DROP
            base_tokens = [t for t, k in zip(base_tokens, keep, strict=True) if k]
            base_tokens += rng.choice(vocabulary, ADD_TOKENS).tolist()
            vector = vector + rng.normal(0.0, NOISE_SIGMA, vector.shape).astype(np.float32)
            vector /= np.linalg.norm(vector)
        ids.append(card.version_id)
        docs.append(" ".join(base_tokens))
        batch[0].append(str(card.version_id))
        batch[1].append(vector)
        batch[2].append({"doc_hash": "synthetic", "base_model": card.base_model, "type": card.type})
        if len(batch[0]) == 2000:
            collection.upsert(ids=batch[0], embeddings=batch[1], metadatas=batch[2])
            batch = ([], [], [])
    if batch[0]:
        collection.upsert(ids=batch[0], embeddings=batch[1], metadatas=batch[2])
    dense.close()
    LexicalIndex.build(ids, docs).save(index_dir / LEXICAL_DIR)
    shutil.copy(real.index_dir / FUSION_FILE, index_dir / FUSION_FILE)
    ready.write_text(IndexManifest(cards=size, lexical_digest=LEXICAL_CONFIG).model_dump_json())
    return CatalogIndex.from_catalog(catalog, index_dir, build=False)


def measure(index: CatalogIndex, prompts: list[str], **filters: str) -> dict[str, float]:
    """p50/p95 milliseconds of end-to-end queries and of queries with a precomputed embedding."""
    for prompt in prompts[:5]:  # warm up (model load, caches)
        index.query(prompt, 10, **filters)
    total, retrieval = [], []
    for prompt in prompts:
        start = time.perf_counter()
        index.query(prompt, 10, **filters)
        total.append(time.perf_counter() - start)
        vector = index.embedding_function.embed_queries([prompt])[0]
        start = time.perf_counter()
        query_with_vector(index, prompt, vector, 10, **filters)
        retrieval.append(time.perf_counter() - start)
    return {
        "p50_ms": 1000 * float(np.percentile(total, 50)),
        "p95_ms": 1000 * float(np.percentile(total, 95)),
        "no_embed_p50_ms": 1000 * float(np.percentile(retrieval, 50)),
        "no_embed_p95_ms": 1000 * float(np.percentile(retrieval, 95)),
    }


def report(label: str, index: CatalogIndex, prompts: list[str]) -> None:
    """Print the figures of one index, unfiltered and filtered."""
    for name, filters in [
        ("all", {}),
        ("SD 1.5 LORA", {"base_model": "SD 1.5", "model_type": "LORA"}),
    ]:
        f = measure(index, prompts, **filters)
        print(
            f"{label:>8s} {len(index.catalog):>7d} cards {name:>12s}: "
            f"p50 {f['p50_ms']:6.1f} ms  p95 {f['p95_ms']:6.1f} ms  "
            f"(without prompt embedding: p50 {f['no_embed_p50_ms']:5.1f}  "
            f"p95 {f['no_embed_p95_ms']:5.1f})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalog", type=Path, default=Path("/tmp/catalog-full"))
    parser.add_argument("--index-dir", type=Path, default=None)
    parser.add_argument("--sizes", type=int, nargs="*", default=[100_000])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--work", type=Path, default=Path("/tmp/search-bench"))
    args = parser.parse_args()

    real = CatalogIndex.open(args.catalog, args.index_dir, build=False)
    pairs = load_pairs(args.catalog / "pairs" / "val.jsonl", real.catalog, limit=args.queries)
    prompts = [prompt for prompt, _ in pairs]
    print(
        f"{len(prompts)} val prompts; "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    with real:
        report("real", real, prompts)
        for size in args.sizes:
            with expand(real, size, args.work) as synthetic:
                report("synthetic", synthetic, prompts)
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
