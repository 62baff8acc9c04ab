"""Subcommands of the agent area: `recommend`, `chat` and `select` (thin: parse, call, print)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm

EXPORTS = ("diffusers", "a1111", "comfyui", "json")


def register(commands: Any) -> None:
    """Add this area's subcommands to the top-level parser."""
    recommend = commands.add_parser(
        "recommend",
        help="pick the model and parameters for one prompt (the main job)",
        description="Pick the catalog model (checkpoint or LoRA) and parameters for a prompt; "
        "print the card, why, the parameters and exports. Uses the starter catalog by default.",
    )
    recommend.add_argument("prompt", help="what the image should show")
    recommend.add_argument(
        "--export",
        choices=[*EXPORTS, "all", "none"],
        default="diffusers",
        help="which export to print after the answer (default: diffusers)",
    )
    recommend.add_argument("--json", action="store_true", help="print the whole result as JSON")
    _agent_options(recommend)
    recommend.set_defaults(handler=_recommend)

    chat = commands.add_parser(
        "chat", help="multi-turn chat in the terminal", description="Chat with DiffAgent."
    )
    chat.add_argument("--session", help="continue this session id (printed at start)")
    chat.add_argument("--db", type=Path, help="conversation database (default: user data dir)")
    _agent_options(chat)
    chat.set_defaults(handler=_chat)

    select = commands.add_parser(
        "select",
        help="choose an API for every prompt of a JSONL file",
        description='Input lines {"id", "prompt", "negative_prompt"?}; output lines {"id", '
        '"api", "hallucinated", "repairs", "latency_ms", "ranking"}.',
    )
    select.add_argument("--in", dest="input", type=Path, required=True, help="prompts JSONL")
    select.add_argument("--out", dest="output", type=Path, required=True, help="APIs JSONL")
    _agent_options(select)
    select.set_defaults(handler=_select)


def _agent_options(parser: argparse.ArgumentParser) -> None:
    """The options every agent command shares; unset ones keep the DIFFAGENT_* settings."""
    parser.add_argument("--catalog", type=Path, help="catalog directory (default: starter)")
    parser.add_argument(
        "--mode",
        choices=["rank", "generate", "retrieval"],
        default=None,
        help="retrieval: the ranked index's top card (default; measured best); rank: the LLM "
        "ranks candidate APIs; generate: the LLM writes the API JSON, then validation repairs it",
    )
    parser.add_argument("--planner", choices=["embedded", "openai"], default=None)
    parser.add_argument("--base-url", help="OpenAI-compatible endpoint (with --planner openai)")
    parser.add_argument("--llm-model", help="model name at the endpoint (with --planner openai)")
    parser.add_argument("--adapter", type=Path, help="PEFT adapter for the embedded planner")
    parser.add_argument("--top-k", type=int, default=None, help="retrieved cards the planner sees")
    parser.add_argument(
        "--rank-prior",
        type=float,
        default=None,
        help="rank mode: weight of the retrieval order beside the LLM (0 = the LLM alone)",
    )
    parser.add_argument(
        "--allow-nsfw", action="store_true", default=None, help="serve NSFW requests"
    )
    images = parser.add_argument_group("images (generation and scoring)")
    images.add_argument(
        "--model-store", type=Path, help="folder of your Civitai downloads: turns on generation"
    )
    images.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None)
    images.add_argument("--seeds", type=int, default=None, help="images per turn (k seeds)")
    images.add_argument("--seed", type=int, default=None, help="first seed")
    images.add_argument("--output-dir", type=Path, help="where images are written")
    images.add_argument("--clip-weights", type=Path, help="open_clip ViT-B/32 weights (CLIP Score)")
    images.add_argument("--imagereward-weights", type=Path, help="ImageReward.pt")
    images.add_argument("--imagereward-med-config", type=Path, help="ImageReward med_config.json")
    images.add_argument("--hps-weights", type=Path, help="HPS v2 checkpoint")


def agent_settings(args: argparse.Namespace, **extra: Any) -> Any:
    """The settings for an agent command: DIFFAGENT_* settings, then the flags that were given."""
    from diffagent.agent.settings import Settings  # noqa: PLC0415 - keeps `--help` fast

    scorer_paths = {
        "scoring.clip_path": args.clip_weights,
        "scoring.imagereward_path": args.imagereward_weights,
        "scoring.imagereward_med_config": args.imagereward_med_config,
        "scoring.hps_path": args.hps_weights,
    }
    given = [name for name, value in scorer_paths.items() if value is not None]
    scorers = list(dict.fromkeys(_SCORER_OF[name] for name in given))
    base = Settings()
    generating = args.model_store is not None or base.generation is not None
    return base.with_overrides(
        {
            "index.catalog_dir": args.catalog,
            "index.top_k": args.top_k,
            "planner.mode": args.mode,
            "planner.backend": args.planner,
            "planner.base_url": args.base_url,
            "planner.model": args.llm_model,
            "planner.adapter_path": args.adapter,
            "planner.rank_prior": args.rank_prior,
            "allow_nsfw": args.allow_nsfw,
            "generation.model_store": args.model_store,
            "generation.device": args.device if generating else None,
            "seeds": args.seeds,
            "seed": args.seed,
            "paths.output_dir": args.output_dir,
            **scorer_paths,
            "scoring.scorers": scorers or None,
            "scoring.device": args.device if given or base.scoring is not None else None,
            **extra,
        }
    )


_SCORER_OF = {
    "scoring.clip_path": "clip",
    "scoring.imagereward_path": "imagereward",
    "scoring.imagereward_med_config": "imagereward",
    "scoring.hps_path": "hps",
}


def _create_agent(args: argparse.Namespace, *, ephemeral: bool, db: Path | None = None) -> Any:
    from diffagent.agent.service import DiffAgent  # noqa: PLC0415 - keeps `--help` fast

    settings = agent_settings(args, **{"paths.ephemeral": ephemeral or None, "paths.database": db})
    return DiffAgent.create(settings)


def _recommend(args: argparse.Namespace) -> int:
    agent = _create_agent(args, ephemeral=True)
    turn = agent.reply(agent.new_session(), args.prompt)
    if args.json:
        print(turn.model_dump_json(indent=2))
        return 0
    print(turn.reply)
    if turn.card is not None:
        print(f"\nCard: {turn.card.air}  download: {turn.card.file.url}")
    wanted = EXPORTS if args.export == "all" else () if args.export == "none" else (args.export,)
    for name in wanted:
        if name in turn.exports:
            print(f"\n--- {name} ---\n{turn.exports[name]}")
    return 0


def _chat(args: argparse.Namespace) -> int:
    agent = _create_agent(args, ephemeral=False, db=args.db)
    session = args.session or agent.new_session()
    print(f"DiffAgent chat, session {session} (Ctrl-D or 'exit' to leave)")
    if args.session:
        for message in agent.history(session):
            print(f"{message['role']}> {message['content']}")
    while True:
        try:
            line = input("you> ")
        except EOFError:
            print()
            return 0
        if line.strip().lower() in {"exit", "quit"}:
            return 0
        print(f"\n{agent.reply(session, line).reply}\n")


def _select(args: argparse.Namespace) -> int:
    rows = _read_prompts(args.input)
    agent = _create_agent(args, ephemeral=True)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    failures = 0
    with args.output.open("w", encoding="utf-8") as out:
        for row in tqdm(rows, desc="select", unit="prompt", file=sys.stderr):
            result = agent.select(row["prompt"], row.get("negative_prompt") or "")
            failures += result.api is None
            line = {
                "id": row["id"],
                "api": result.api.model_dump(mode="json") if result.api else None,
                "hallucinated": result.hallucinated,
                "repairs": [r.model_dump() for r in result.repairs],
                "latency_ms": round(result.latency_ms, 2),
                "ranking": result.ranking[:10],
                "error": result.plan_error,
            }
            out.write(json.dumps(line, ensure_ascii=False) + "\n")
    print(f"wrote {len(rows)} lines to {args.output} ({failures} without an API)")
    return 0


def _read_prompts(path: Path) -> list[dict[str, Any]]:
    """Read and check the prompt lines; a bad line is a one-line error naming it."""
    rows = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{number}: not JSON ({error.msg})") from None
            if not isinstance(row, dict) or not isinstance(row.get("prompt"), str):
                raise ValueError(
                    f'{path}:{number}: expected {{"id", "prompt", "negative_prompt"?}}'
                )
            row.setdefault("id", str(number))
            rows.append(row)
    return rows
