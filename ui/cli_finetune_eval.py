"""The `finetune eval` subcommand: the paper's Tables 1 and 2 for the planners (thin)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

PROMPT_SETS = ("dabench-test", "coco", "parti")


def register_eval(actions: Any) -> None:
    """Add `finetune eval` to the finetune actions."""
    ev = actions.add_parser(
        "eval",
        help="Tables 1 and 2 of the paper (hallucination, usable JSON, image scores) as "
        "markdown, JSON and plots.",
        description="Evaluate the stock planner and each adapter in generate mode (Table 1), "
        "then generate and score the paper's rows (Table 2).",
    )
    ev.add_argument("--catalog", type=Path, required=True, help="Catalog directory.")
    ev.add_argument(
        "--prompts",
        nargs="+",
        choices=PROMPT_SETS,
        required=True,
        help="Prompt sets: DABench test pairs, COCO captions, PartiPrompts (../shared/data).",
    )
    ev.add_argument("--out", type=Path, required=True, help="Report folder.")
    ev.add_argument(
        "--adapter",
        action="append",
        default=[],
        metavar="[NAME=]DIR",
        help="PEFT LoRA folder of a fine-tuned planner (repeat: sft=DIR rrhf=DIR); the last one "
        "is the reference for Baseline* and DiffAgent#.",
    )
    ev.add_argument(
        "--planner-url",
        default=None,
        help="Evaluate an OpenAI-compatible endpoint (e.g. vLLM) instead of the embedded model.",
    )
    ev.add_argument(
        "--planner-model",
        action="append",
        default=[],
        metavar="[NAME=]MODEL",
        help="Served model name(s) at --planner-url, e.g. the LoRA module: rrhf=planner.",
    )
    ev.add_argument("--no-stock", action="store_true", help="Leave out the stock planner row.")
    ev.add_argument("--limit", type=int, default=None, help="Prompts per set (default: paper's).")
    ev.add_argument("--seeds", type=int, default=3, help="k images per API (paper: 3).")
    ev.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    ev.add_argument("--top-k", type=int, default=8, help="Candidate cards per prompt.")
    ev.add_argument("--max-new-tokens", type=int, default=192)
    ev.add_argument("--no-images", action="store_true", help="Table 1 only (no generation).")
    ev.add_argument(
        "--tiny-weights",
        type=Path,
        default=None,
        help="Run Table 2 on tiny random weights in DIR (made when missing): numbers mean "
        "nothing, the machinery is proven.",
    )
    ev.add_argument("--model-store", type=Path, default=None, help="Real weights: your files.")
    ev.add_argument(
        "--base-checkpoint",
        action="append",
        default=[],
        metavar="BASE=FILE",
        help="Real weights: base checkpoint in the store, e.g. 'SD 1.5=v1-5-pruned.safetensors'.",
    )
    ev.add_argument("--size", type=int, default=None, help="Square side (default: native).")
    ev.add_argument("--index-dir", type=Path, default=None, help="Candidates from this index.")
    ev.add_argument("--sample-seed", type=int, default=0, help="Prompt sampling seed.")
    ev.add_argument("--threads", type=int, default=None, help="torch CPU threads.")
    ev.set_defaults(handler=_eval)


def _named(values: list[str], default: str) -> list[tuple[str, str]]:
    """'NAME=VALUE' pairs; a lone unnamed VALUE is named `default`."""
    out: list[tuple[str, str]] = []
    for value in values:
        name, sep, rest = value.partition("=")
        if sep and "/" not in name:
            out.append((name, rest))
        elif len(values) == 1:
            out.append((default, value))
        else:
            raise ValueError(f"name each of several values, e.g. sft={value}")
    return out


def _eval(args: argparse.Namespace) -> int:
    from diffagent.agent.settings import Settings
    from diffagent.finetune.eval_harness import EvalConfig, PlannerSpec, run_eval
    from diffagent.finetune.eval_report import write_report

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    planners: list[PlannerSpec] = []
    if args.planner_url and args.adapter:
        raise ValueError(
            "--adapter is for the embedded planner; with --planner-url name the "
            "served models with --planner-model NAME=MODEL"
        )
    if args.planner_url:
        for name, model in _named(args.planner_model, "served") or [("served", "")]:
            planners.append(PlannerSpec(name=name, base_url=args.planner_url, model=model or None))
    else:
        if not args.no_stock:
            planners.append(PlannerSpec(name="stock"))
        for name, folder in _named(args.adapter, "tuned"):
            planners.append(PlannerSpec(name=name, adapter=Path(folder)))
    store = args.model_store
    scoring = None
    if not args.no_images and args.tiny_weights is None:
        settings = Settings()
        scoring = settings.scoring
        if store is None and settings.generation is not None:
            store = settings.generation.model_store
    bases = {}
    for item in args.base_checkpoint:
        base, sep, file = item.partition("=")
        if not sep:
            raise ValueError(f"--base-checkpoint wants BASE=FILE, got {item!r}")
        bases[base.strip()] = Path(file) if Path(file).is_absolute() else (store or Path()) / file
    config = EvalConfig(
        catalog_dir=args.catalog,
        prompt_sets=args.prompts,
        out_dir=args.out,
        planners=planners,
        limit=args.limit,
        seeds=args.seeds,
        device=args.device,
        top_k=args.top_k,
        max_new_tokens=args.max_new_tokens,
        images=not args.no_images,
        tiny_weights=args.tiny_weights,
        model_store=store,
        base_checkpoints=bases,
        scoring=scoring,
        size=args.size,
        index_dir=args.index_dir,
        sample_seed=args.sample_seed,
    )
    report = run_eval(config, progress=lambda line: print(line, file=sys.stderr, flush=True))
    paths = write_report(report, args.out)
    print((args.out / "report.md").read_text(encoding="utf-8"))
    print("wrote " + ", ".join(str(path) for path in paths.values()))
    return 0
