"""Subcommands of the catalog area (thin: parse arguments, call the library, print)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from diffagent.base_models import BASE_MODELS, MODEL_TYPES
from diffagent.index.builder.filters import DEFAULT_NSFW_TERMS, FILE_FORMATS, FilterConfig
from diffagent.index.builder.reverse_map import MappingConfig
from diffagent.index.builder.splits import SplitConfig


def register(commands: Any) -> None:
    """Add `catalog build`, `catalog starter` and `catalog crawl` to the top-level parser."""
    catalog = commands.add_parser("catalog", help="build the model catalog from Civitai data")
    sub = catalog.add_subparsers(dest="catalog_command", required=True, metavar="ACTION")

    build = sub.add_parser("build", help="raw Civitai JSONL -> cards, pairs, splits, stats")
    build.add_argument(
        "--civitai",
        type=Path,
        nargs="+",
        required=True,
        metavar="FILE",
        help="raw /api/v1/models items as JSON Lines (plain or .gz)",
    )
    build.add_argument(
        "--images",
        type=Path,
        nargs="+",
        default=[],
        metavar="FILE",
        help="crawled /api/v1/images items (JSON Lines) to add to their versions",
    )
    build.add_argument("--out", type=Path, required=True, metavar="DIR")
    build.add_argument("--types", nargs="+", default=["Checkpoint", "LORA"], choices=MODEL_TYPES)
    build.add_argument(
        "--base-models", nargs="+", default=list(BASE_MODELS), choices=list(BASE_MODELS)
    )
    build.add_argument("--allow-nsfw-models", action="store_true")
    build.add_argument("--exclude-poi", action="store_true", help="drop models of real persons")
    build.add_argument(
        "--image-nsfw",
        nargs="+",
        default=["None"],
        choices=["None", "Soft", "Mature", "X"],
        help="image ratings kept",
    )
    build.add_argument(
        "--no-prompt-guard", action="store_true", help="keep images whose prompt has explicit words"
    )
    build.add_argument(
        "--formats",
        nargs="+",
        default=["SafeTensor"],
        choices=FILE_FORMATS,
        help="primary-file formats kept (PickleTensor is unsafe to load)",
    )
    build.add_argument("--min-model-downloads", type=int, default=1000)
    build.add_argument("--min-version-downloads", type=int, default=0)
    build.add_argument("--min-rating", type=float, default=0.0)
    build.add_argument("--min-rating-count", type=int, default=0)
    build.add_argument(
        "--unresolved-base",
        choices=["drop", "default"],
        default="drop",
        help="LoRA images whose base checkpoint is unknown",
    )
    build.add_argument("--seed", type=int, default=0, help="split seed")
    build.add_argument("--quiet", action="store_true", help="no progress bars")
    build.set_defaults(handler=_build)

    starter = sub.add_parser("starter", help="pick the starter catalog from a built catalog")
    starter.add_argument("--catalog", type=Path, required=True, metavar="DIR")
    starter.add_argument("--out", type=Path, required=True, metavar="DIR")
    starter.add_argument("--max", type=int, default=500, dest="max_cards")
    starter.add_argument(
        "--checkpoints", type=int, default=150, help="most popular checkpoints to include first"
    )
    starter.set_defaults(handler=_starter)

    crawl = sub.add_parser("crawl", help="crawl the live Civitai REST API into JSON Lines")
    crawl.add_argument("--endpoint", choices=["models", "images"], default="models")
    crawl.add_argument("--out", type=Path, required=True, metavar="FILE")
    crawl.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        metavar="FILE",
        help="resume state (default: OUT.checkpoint.json)",
    )
    crawl.add_argument("--base-url", default="https://civitai.com/api/v1")
    crawl.add_argument("--api-key", default=None, help="or set CIVITAI_API_KEY")
    crawl.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="query parameter, repeatable (e.g. types=LORA, sort=Most Downloaded)",
    )
    crawl.add_argument("--limit", type=int, default=100, help="items per page")
    crawl.add_argument("--max-pages", type=int, default=None)
    crawl.set_defaults(handler=_crawl)


def _build(args: argparse.Namespace) -> int:
    from diffagent.index.builder.build import (
        BuildConfig,
        build_catalog,
        format_stats,
        write_catalog,
    )

    config = BuildConfig(
        filters=FilterConfig(
            types=args.types,
            base_models=args.base_models,
            allow_nsfw_models=args.allow_nsfw_models,
            allow_poi=not args.exclude_poi,
            image_nsfw=args.image_nsfw,
            prompt_guard=not args.no_prompt_guard,
            nsfw_terms=list(DEFAULT_NSFW_TERMS),
            formats=args.formats,
            min_model_downloads=args.min_model_downloads,
            min_version_downloads=args.min_version_downloads,
            min_rating=args.min_rating,
            min_rating_count=args.min_rating_count,
        ),
        mapping=MappingConfig(unresolved_base=args.unresolved_base),
        splits=SplitConfig(seed=args.seed),
        progress=not args.quiet,
    )
    result = build_catalog(args.civitai, config, images=args.images)
    if not result.cards:
        raise ValueError(
            "the build kept 0 cards, so nothing was written (versions per stage: "
            + ", ".join(f"{stage} {n}" for stage, n in result.stats["versions"].items())
            + "); check the input files and loosen the filters (see --help)"
        )
    write_catalog(result, args.out)
    print(format_stats(result.stats))
    print(f"wrote {args.out}/cards.jsonl, {args.out}/pairs/{{train,val,test}}.jsonl, stats.json")
    return 0


def _starter(args: argparse.Namespace) -> int:
    from diffagent.index.builder.starter import make_starter

    summary = make_starter(args.catalog, args.out, args.max_cards, args.checkpoints)
    print(summary)
    return 0


def _crawl(args: argparse.Namespace) -> int:
    import os

    from diffagent.index.builder.crawler import CrawlConfig, crawl

    params: dict[str, str] = {}
    for item in args.param:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--param {item!r} is not KEY=VALUE")
        params[key] = value
    config = CrawlConfig(
        base_url=args.base_url,
        endpoint=args.endpoint,
        params=params,
        limit=args.limit,
        api_key=args.api_key or os.environ.get("CIVITAI_API_KEY"),
        max_pages=args.max_pages,
    )
    checkpoint = args.checkpoint or args.out.with_name(args.out.name + ".checkpoint.json")
    state = crawl(config, args.out, checkpoint)
    print(
        f"{state.items_written} items in {state.pages_done} pages -> {args.out}"
        + (" (complete)" if state.done else " (resumable)")
    )
    return 0
