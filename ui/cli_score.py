"""Subcommands of the score area (thin: parse arguments, call the library, print)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from diffagent.tools.scoring import ALL_SCORERS


def register(commands: Any) -> None:
    """Add `diffagent score` to the top-level parser."""
    parser = commands.add_parser(
        "score",
        help="score images for a prompt: CLIP Score, ImageReward, HPS v2 and the unified metric",
        description=(
            "Score images for a prompt with local weights. Weights come from the flags or from "
            "the scoring settings (DIFFAGENT_SCORING__CLIP_PATH, __IMAGEREWARD_PATH, "
            "__IMAGEREWARD_MED_CONFIG, __HPS_PATH, __CACHE_PATH)."
        ),
    )
    parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    parser.add_argument("--prompt", required=True)
    parser.add_argument(
        "--scorers",
        default=",".join(ALL_SCORERS),
        help=f"comma-separated subset of {','.join(ALL_SCORERS)} (default: all)",
    )
    parser.add_argument("--clip", type=Path, help="CLIP ViT-B/32 OpenAI weights (ViT-B-32.pt)")
    parser.add_argument("--clip-arch", help="open_clip architecture or config JSON")
    parser.add_argument("--imagereward", type=Path, help="ImageReward.pt")
    parser.add_argument("--imagereward-med-config", type=Path, help="ImageReward med_config.json")
    parser.add_argument("--hps", type=Path, help="HPS_v2_compressed.pt or HPS_v2.1_compressed.pt")
    parser.add_argument("--hps-version", choices=["v2.0", "v2.1"])
    parser.add_argument("--hps-arch", help="open_clip architecture or config JSON")
    parser.add_argument("--seeds", help="comma-separated seed of each image (enables the cache)")
    parser.add_argument("--api-key", default="", help="API identity for the score cache")
    parser.add_argument("--cache", type=Path, help="SQLite score cache file")
    parser.add_argument("--device", choices=["cpu", "cuda", "auto"])
    parser.add_argument("--json", action="store_true", help="print the full report as JSON")
    parser.set_defaults(handler=run_score)


def run_score(args: argparse.Namespace) -> int:
    """Score the images and print per-image raw + normalised scores and the unified metric."""
    from PIL import Image

    from diffagent.agent.settings import Settings
    from diffagent.tools.scoring import UnifiedScorer

    scorers = [name.strip() for name in args.scorers.split(",") if name.strip()]
    unknown = [name for name in scorers if name not in ALL_SCORERS]
    if unknown:
        raise ValueError(f"unknown scorer(s) {unknown}; allowed: {', '.join(ALL_SCORERS)}")
    seeds = [int(seed) for seed in args.seeds.split(",")] if args.seeds else None
    config = scoring_config(Settings(), args, scorers)
    for path in args.images:
        if not path.is_file():
            raise FileNotFoundError(f"image not found: {path}")
    images = [Image.open(path) for path in args.images]
    report = UnifiedScorer(config).score(args.prompt, images, api_key=args.api_key, seeds=seeds)
    if args.json:
        print(json.dumps(report.model_dump(mode="json"), indent=2))
        return 0
    names = report.scorers
    print("image\t" + "\t".join(f"{name} raw\t{name} norm" for name in names) + "\tS(t,x)")
    for path, row in zip(args.images, report.per_image, strict=True):
        cells = []
        for name in names:
            value = getattr(row, name)
            cells.append(f"{value.raw:.4f}\t{value.normalised:.4f}")
        print(f"{path}\t" + "\t".join(cells) + f"\t{row.unified:.4f}")
    print(f"unified metric S(t,r) over {len(images)} image(s): {report.unified:.4f}")
    for name in names:
        bounds = report.ranges[name]
        print(f"{name}: {report.conventions[name]}; normalised from [{bounds.low}, {bounds.high}]")
    return 0


def scoring_config(settings: Any, args: argparse.Namespace, scorers: list[str]) -> Any:
    """The scoring section of the DIFFAGENT_* settings with the flags that were given on top."""
    flags = {
        "scorers": scorers,
        "clip_path": args.clip,
        "clip_arch": args.clip_arch,
        "imagereward_path": args.imagereward,
        "imagereward_med_config": args.imagereward_med_config,
        "hps_path": args.hps,
        "hps_version": args.hps_version,
        "hps_arch": args.hps_arch,
        "cache_path": args.cache,
        "device": args.device,
    }
    updates = {f"scoring.{name}": value for name, value in flags.items()}
    return settings.with_overrides(updates).scoring
