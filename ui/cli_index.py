"""Subcommands of the index area (thin: parse arguments, call the library, print)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from diffagent.base_models import BASE_MODELS, MODEL_TYPES
from diffagent.index.catalog import starter_catalog_dir


def register(commands: Any) -> None:
    """Add `index build` and `index query` to the top-level parser."""
    parser = commands.add_parser("index", help="Build or query the hybrid model-card index.")
    actions = parser.add_subparsers(dest="index_command", required=True, metavar="ACTION")

    build = actions.add_parser("build", help="Build or update the index of a catalog.")
    _catalog_options(build)
    build.add_argument(
        "--no-tune",
        action="store_true",
        help="Keep fusion weights; do not tune on pairs/val.jsonl.",
    )
    build.add_argument("--no-ranker", action="store_true", help="Do not train the learned ranker.")
    build.add_argument(
        "--ranker-queries",
        type=int,
        default=None,
        help="Evidence prompts sampled to train the ranker (default 8000).",
    )
    build.set_defaults(handler=_build)

    query = actions.add_parser("query", help="Top cards for a prompt, as JSON lines.")
    _catalog_options(query)
    query.add_argument("prompt", help="Image prompt to find models for.")
    query.add_argument("-k", type=int, default=10, help="Number of cards (default 10).")
    query.add_argument("--base-model", choices=list(BASE_MODELS), default=None, help="Filter.")
    query.add_argument(
        "--type", dest="model_type", choices=MODEL_TYPES, default=None, help="Filter."
    )
    query.add_argument(
        "--name", action="store_true", help="Treat PROMPT as a model name (fuzzy name search)."
    )
    query.set_defaults(handler=_query)


def _catalog_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--catalog",
        type=Path,
        default=None,
        help="Catalog directory with cards.jsonl (default: the packaged starter catalog).",
    )
    parser.add_argument(
        "--index-dir",
        type=Path,
        default=None,
        help="Where the index lives (default: CATALOG/index, or the user data dir).",
    )
    parser.add_argument(
        "--exclude-split",
        choices=["train", "val", "test"],
        default=None,
        help="Evaluation index: its prompt evidence leaves this split's images out "
        "(default folder CATALOG/index-eval-SPLIT).",
    )


def _build(args: argparse.Namespace) -> int:
    from diffagent.index.catalog import Catalog
    from diffagent.index.search import CatalogIndex, default_index_dir
    from diffagent.index.search.ranker import RankerConfig

    catalog_dir = args.catalog or starter_catalog_dir()
    catalog = Catalog.load(catalog_dir)
    index_dir = args.index_dir or default_index_dir(catalog_dir)
    if args.index_dir is None and args.exclude_split:
        index_dir = index_dir.with_name(f"{index_dir.name}-eval-{args.exclude_split}")
    index = CatalogIndex(
        catalog, index_dir, _embedding_function(), exclude_split=args.exclude_split
    )
    config = RankerConfig(train_queries=args.ranker_queries or RankerConfig().train_queries)
    with index:
        report = index.build(
            tune_weights=not args.no_tune, train_ranker=not args.no_ranker, ranker_config=config
        )
    weights = index.weights if report.tuned else None
    print(json.dumps({"index_dir": str(index.index_dir), **report.model_dump()}))
    if weights is not None:
        print(json.dumps({"fusion": weights.model_dump(exclude={"source_digest"})}))
    return 0


def _query(args: argparse.Namespace) -> int:
    from diffagent.index.search import CatalogIndex

    with CatalogIndex.open(
        args.catalog or starter_catalog_dir(),
        args.index_dir,
        embedding_function=_embedding_function(),
        exclude_split=args.exclude_split,
    ) as index:
        search = index.nearest_by_name if args.name else index.query
        hits = search(args.prompt, args.k, base_model=args.base_model, model_type=args.model_type)
    for hit in hits:
        row = {
            "version_id": hit.card.version_id,
            "model_id": hit.card.model_id,
            "name": hit.card.name,
            "version": hit.card.version_name,
            "type": hit.card.type,
            "base_model": hit.card.base_model,
            "score": round(hit.score, 4),
            "lexical_score": None if hit.lexical_score is None else round(hit.lexical_score, 4),
            "dense_score": None if hit.dense_score is None else round(hit.dense_score, 4),
        }
        print(json.dumps(row, ensure_ascii=False))
    return 0


def _embedding_function() -> Any:
    from diffagent.index.search.embeddings import MiniLMEmbeddingFunction

    return MiniLMEmbeddingFunction()
