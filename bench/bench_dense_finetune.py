"""Does fine-tuning MiniLM on train pairs earn its cost as the ranker's dense channel?

    .venv/bin/python bench/bench_dense_finetune.py --catalog /tmp/catalog-full \
        [--examples 6000] [--epochs 1] [--work /tmp/dense-finetune]

One run, same evaluation index (`index build --exclude-split test`), same ranker recipe:
1. the train pairs are split in two: the ranker's training queries (its usual seeded sample) and
   the rest, which fine-tune MiniLM (sentence-transformers, MultipleNegativesRankingLoss: in-batch
   negatives; each prompt's positive is another evidence prompt of its card, never its own image);
   so the ranker never learns from queries the embedder has seen;
2. every evidence prompt is embedded again with the tuned model (onnxruntime);
3. the ranker is trained with the stock vectors and with the tuned ones, and both are scored on
   the test split (model top-1 / version top-1), beside the ranker without dense features.
Prints the fine-tuning and re-embedding times: the cost the gain must pay for.
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import numpy as np

from diffagent.index.catalog import Catalog, iter_evidence
from diffagent.index.search import CatalogIndex
from diffagent.index.search.embeddings import (
    DEFAULT_QUERY_MAX_SEQ_LENGTH,
    MiniLMEmbeddingFunction,
)
from diffagent.index.search.evidence import split_image_ids
from diffagent.index.search.evidence_index import EvidenceIndex
from diffagent.index.search.features import FEATURE_GROUPS, FEATURES
from diffagent.index.search.onnx_minilm import model_dir
from diffagent.index.search.ranked import split_queries
from diffagent.index.search.ranker import (
    RankerConfig,
    RankingData,
    ranking_data,
    sample_queries,
    train_ranker,
)


def finetune_pairs(
    pool: dict[int, list[tuple[int, str]]],
    pairs: list[tuple[str, int, int]],
    limit: int,
    seed: int,
) -> list[tuple[str, str]]:
    """(prompt, another evidence prompt of its card) for up to `limit` pairs."""
    rng = random.Random(seed)
    out = []
    for prompt, version_id, image_id in pairs:
        others = [p for i, p in pool.get(version_id, []) if i != image_id and p != prompt]
        if others:
            out.append((prompt, rng.choice(others)))
        if len(out) >= limit:
            break
    return out


def finetune(pairs: list[tuple[str, str]], out: Path, epochs: int, batch: int) -> float:
    """Fine-tune the bundled MiniLM with in-batch negatives; return the seconds taken."""
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from sentence_transformers.sentence_transformer.training_args import BatchSamplers

    started = time.perf_counter()
    model = SentenceTransformer(str(model_dir()), device="cpu", local_files_only=True)
    model.max_seq_length = DEFAULT_QUERY_MAX_SEQ_LENGTH
    data = Dataset.from_dict({"anchor": [a for a, _ in pairs], "positive": [p for _, p in pairs]})
    args = SentenceTransformerTrainingArguments(
        output_dir=str(out / "checkpoints"),
        num_train_epochs=epochs,
        per_device_train_batch_size=batch,
        learning_rate=2e-5,
        warmup_steps=0.1,  # a float is a share of the steps
        batch_sampler=BatchSamplers.NO_DUPLICATES,  # a duplicate in the batch is a false negative
        save_strategy="no",
        logging_steps=20,
        report_to=[],
        use_cpu=True,
        seed=0,
    )
    trainer = SentenceTransformerTrainer(
        model=model, args=args, train_dataset=data, loss=MultipleNegativesRankingLoss(model)
    )
    trainer.train()
    model.save(str(out / "model"))
    return time.perf_counter() - started


def datasets_for(
    index: EvidenceIndex,
    queries: dict[str, list[tuple[str, int, int]]],
    test_vectors: np.ndarray,
) -> dict[str, RankingData]:
    """Train/val (leave-one-out) and test ranking data with the index's current vectors."""
    return {
        name: ranking_data(
            index,
            rows,
            leave_one_out=name != "test",
            desc=f"{name} features",
            vectors=test_vectors if name == "test" else None,
        )
        for name, rows in queries.items()
    }


def scored(
    index: EvidenceIndex,
    data: dict[str, RankingData],
    test_q: list[tuple[str, int, int]],
    config: RankerConfig,
    features: tuple[str, ...],
) -> tuple[float, float]:
    """Model and version top-1 on test of a ranker trained with `features` only."""
    booster = train_ranker(
        data["train"], data["val"], config.model_copy(update={"features": features})
    )
    columns = [FEATURES.index(f) for f in features]
    test = data["test"]
    scores = booster.predict(test.features[:, columns], num_threads=1)
    model_of = {card.version_id: card.model_id for card in index.cards}
    model_hits, version_hits, start = 0, 0, 0
    for size, rows, (_, version_id, _) in zip(test.groups, test.candidates, test_q, strict=True):
        best = index.cards[rows[int(np.argmax(scores[start : start + size]))]]
        start += size
        model_hits += best.model_id == model_of[version_id]
        version_hits += best.version_id == version_id
    return model_hits / len(test_q), version_hits / len(test_q)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalog", type=Path, default=Path("/tmp/catalog-full"))
    parser.add_argument("--examples", type=int, default=6000, help="fine-tuning pairs")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--ranker-queries", type=int, default=4000, help="ranker train queries")
    parser.add_argument("--work", type=Path, default=Path("/tmp/dense-finetune"))
    args = parser.parse_args()

    catalog = Catalog.load(args.catalog)
    config = RankerConfig(train_queries=args.ranker_queries)
    train_all = split_queries(catalog, "train")
    ranker_train = sample_queries(train_all, config.train_queries, config.seed)
    taken = {image for _, _, image in ranker_train}
    rest = [q for q in train_all if q[2] not in taken]
    random.Random(1).shuffle(rest)
    val_q = sample_queries(split_queries(catalog, "val"), config.val_queries, config.seed)
    test_q = split_queries(catalog, "test")

    excluded = split_image_ids(catalog.directory, "test")
    pool = {
        version_id: [(i, p) for i, p in prompts if i not in excluded]
        for version_id, prompts in iter_evidence(catalog.directory)
    }
    pairs = finetune_pairs(pool, rest, args.examples, seed=0)
    print(f"fine-tuning on {len(pairs)} pairs (ranker trains on {len(ranker_train)} others)")
    if not (args.work / "model").is_dir():
        seconds = finetune(pairs, args.work, args.epochs, args.batch)
        print(f"fine-tuning: {seconds:.0f} s")

    index = CatalogIndex.open(args.catalog, exclude_split="test", build=False)
    assert index.ranked is not None and index.ranked.index.prompt_vectors is not None
    evidence = index.ranked.index
    texts = sorted(evidence.prompt_row, key=evidence.prompt_row.__getitem__)
    tuned = MiniLMEmbeddingFunction(
        max_seq_length=DEFAULT_QUERY_MAX_SEQ_LENGTH, model_path=str(args.work / "model")
    )
    started = time.perf_counter()
    tuned_vectors = tuned.embed(texts, show_progress=True)
    print(f"re-embedding {len(texts)} evidence prompts: {time.perf_counter() - started:.0f} s")
    tuned_test = tuned.embed_queries([q for q, _, _ in test_q])
    stock_test = index.embedding_function.embed_queries([q for q, _, _ in test_q])

    queries = {"train": ranker_train, "val": val_q, "test": test_q}
    stock = datasets_for(evidence, queries, stock_test)
    no_dense = tuple(f for f in FEATURES if f not in FEATURE_GROUPS["dense"])
    rows = {
        "no dense": scored(evidence, stock, test_q, config, no_dense),
        "stock MiniLM": scored(evidence, stock, test_q, config, FEATURES),
    }
    stock_vectors = evidence.prompt_vectors
    evidence.prompt_vectors = tuned_vectors
    evidence.with_card_vectors()
    tuned_data = datasets_for(evidence, queries, tuned_test)
    rows["tuned MiniLM"] = scored(evidence, tuned_data, test_q, config, FEATURES)
    evidence.prompt_vectors = stock_vectors
    evidence.with_card_vectors()
    print(f"\ntest split, {len(test_q)} pairs; ranker trained on {len(ranker_train)} train pairs")
    print(f"{'dense channel':<16}{'model_top1':>12}{'version_top1':>14}")
    for name, (model_top1, version_top1) in rows.items():
        print(f"{name:<16}{model_top1:>12.4f}{version_top1:>14.4f}")
    index.close()


if __name__ == "__main__":
    main()
