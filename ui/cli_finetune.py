"""Subcommands of the finetune area: `finetune sft`, `finetune rrhf` (thin: parse, call, print)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from diffagent.ui.cli_finetune_eval import register_eval


def register(commands: Any) -> None:
    """Add `finetune` and its actions (sft, rrhf) to the top-level parser."""
    parser = commands.add_parser(
        "finetune", help="Train the planner: SFT and RRHF of a LoRA adapter (needs the extra)."
    )
    actions = parser.add_subparsers(dest="finetune_command", required=True, metavar="ACTION")
    register_sft(actions)
    register_rrhf(actions)
    register_eval(actions)


def _common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--catalog", type=Path, required=True, help="Catalog directory (cards.jsonl, pairs/)."
    )
    parser.add_argument(
        "--model-dir",
        type=Path,
        default=None,
        help="Base causal LM folder (default: the embedded SmolLM2-135M, converted once).",
    )
    parser.add_argument("--max-examples", type=int, default=None, help="Train pairs used.")
    parser.add_argument("--epochs", type=float, default=1.0, help="Passes over the data.")
    parser.add_argument("--lr", type=float, default=None, help="Learning rate.")
    parser.add_argument("--batch-size", type=int, default=None, help="Examples per step.")
    parser.add_argument("--max-steps", type=int, default=None, help="Stop after this many steps.")
    parser.add_argument("--save-steps", type=int, default=None, help="Checkpoint every N steps.")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-minutes", type=float, default=None, help="Wall-time cap.")
    parser.add_argument(
        "--stop-at-step",
        type=int,
        default=None,
        help="Stop after this step, schedule unchanged (replays a time-capped run).",
    )
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast (AVX512-BF16).")
    parser.add_argument(
        "--index-dir", type=Path, default=None, help="Ranked index (the candidate source)."
    )
    parser.add_argument(
        "--no-resume", action="store_true", help="Start over instead of resuming from OUT."
    )
    parser.add_argument("--plot", type=Path, default=None, help="Write the loss curve PNG here.")


def register_sft(actions: Any) -> None:
    """Add `finetune sft`: supervised fine-tuning on the catalog's train pairs."""
    sft = actions.add_parser("sft", help="SFT a LoRA adapter on the catalog's train pairs.")
    _common_options(sft)
    sft.add_argument("--out", type=Path, required=True, help="Adapter folder to write.")
    sft.add_argument(
        "--format",
        choices=["rank", "generate", "both"],
        default="rank",
        help="Answer format(s) to train: rank-mode answer lines, generate-mode API JSON.",
    )
    sft.add_argument("--max-val", type=int, default=None, help="Val pairs for evaluation.")
    sft.add_argument(
        "--max-length",
        type=int,
        default=None,
        help="Tokens per example, prompt and answer (default 384: rank format; a generate-format "
        "example over 8 candidate cards takes about 1,165, up to about 1,460).",
    )
    sft.add_argument(
        "--generate-cards",
        type=int,
        default=None,
        help="Candidate cards shown in a generate-format example (default 8; match the "
        "planner's top-k at run time).",
    )
    sft.set_defaults(handler=_sft)


def register_rrhf(actions: Any) -> None:
    """Add `finetune rrhf`: rank responses by reward, on top of an SFT adapter."""
    rrhf = actions.add_parser("rrhf", help="RRHF of an SFT adapter with a pluggable reward.")
    _common_options(rrhf)
    rrhf.add_argument("--sft", type=Path, default=None, help="SFT adapter folder to start from.")
    rrhf.add_argument("--out", type=Path, required=True, help="Adapter folder to write.")
    rrhf.add_argument("--reward", choices=["catalog", "unified"], default="catalog")
    rrhf.add_argument(
        "--candidates", type=int, default=2, help="m samples from the SFT model per prompt."
    )
    rrhf.add_argument("--ranker-k", type=int, default=6, help="Ranker candidates per prompt.")
    rrhf.add_argument(
        "--no-gold",
        dest="gold",
        action="store_false",
        default=None,
        help="Do not put the pair's own card in its group (catalog reward).",
    )
    rrhf.add_argument("--seeds", type=int, default=2, help="k images per response (unified).")
    rrhf.add_argument(
        "--groups", type=Path, default=None, help="Reuse a groups.jsonl instead of building one."
    )
    rrhf.add_argument("--ray", action="store_true", help="Build candidates/rewards on Ray.")
    rrhf.add_argument(
        "--groups-only", action="store_true", help="Build OUT/groups.jsonl and stop (no training)."
    )
    rrhf.set_defaults(handler=_rrhf)


def _sft(args: argparse.Namespace) -> int:
    from diffagent.finetune.sft import SFTRunConfig, run_sft

    config = SFTRunConfig.from_args(vars(args))
    report = run_sft(config)
    _plot(args.plot, config.out, "SFT")
    print(json.dumps(report))
    return 0


def _rrhf(args: argparse.Namespace) -> int:
    from diffagent.finetune.rrhf import RRHFRunConfig, run_rrhf

    config = RRHFRunConfig.from_args(vars(args))
    report = run_rrhf(config)
    if not config.groups_only:
        _plot(args.plot, config.out, "RRHF")
    print(json.dumps(report))
    return 0


def _plot(png: Path | None, out: Path, label: str) -> None:
    if png is not None:
        from diffagent.finetune.sft import LOG_FILE, plot_curve

        plot_curve([out / LOG_FILE], png, [f"{label}: {out.name}"])
