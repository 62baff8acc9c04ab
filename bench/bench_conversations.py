"""Conversation benchmark: scripted multi-turn conversations, pass rate per refinement type.

Run on the starter catalog, then on the full catalog (retrieval mode, a minute or two each once the
index is built; the first run on a catalog builds its index):

    .venv/bin/python bench/bench_conversations.py
    DIFFAGENT_HOME=/tmp/conv-home .venv/bin/python bench/bench_conversations.py \
        --catalog /tmp/conv-full

Each turn of `bench/conversations.json` lists expected properties (prompt words, card style
evidence, size, steps, seed, kept or changed model, LoRA count, and for composition edits: fewer
LoRAs, the dropped LoRA gone, the style LoRAs' weight up); every image turn is also checked for no
adult-oriented card, one medium in the prompt, one trigger-word group and a valid composition.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from diffagent.agent.conversation_eval import load_conversations, pass_rates, run_conversation
from diffagent.agent.service import DiffAgent
from diffagent.agent.settings import Settings

DATA = Path(__file__).with_name("conversations.json")


def main(argv: list[str] | None = None) -> int:
    """Play every scripted conversation and print the pass rate per refinement type."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalog", type=Path, default=None, help="catalog dir (default: starter)")
    parser.add_argument("--data", type=Path, default=DATA, help="conversations JSON file")
    parser.add_argument("--only", default=None, help="run only conversations of this type")
    parser.add_argument("--json", type=Path, default=None, help="write the outcomes here")
    args = parser.parse_args(argv)

    settings = Settings().with_overrides(
        {"planner.mode": "retrieval", "paths.ephemeral": True, "index.catalog_dir": args.catalog}
    )
    agent = DiffAgent.create(settings)
    conversations = load_conversations(args.data)
    if args.only:
        conversations = [c for c in conversations if c.type == args.only]
    start = time.perf_counter()
    outcomes = [run_conversation(agent, c, agent.context.catalog) for c in conversations]
    seconds = time.perf_counter() - start
    agent.close()

    table = pass_rates(outcomes)
    print(f"catalog: {args.catalog or 'starter'} ({len(agent.context.catalog)} cards)")
    print(f"{'type':<14} {'conversations':>14} {'turns':>12}")
    for kind, row in sorted(table.items()):
        print(
            f"{kind:<14} {row['passed']:>6}/{row['conversations']:<3} "
            f"({100 * row['passed'] / row['conversations']:5.1f}%) "
            f"{row['turns_passed']:>4}/{row['turns']:<3}"
        )
    passed = sum(o.passed for o in outcomes)
    turns = sum(len(o.turns) for o in outcomes)
    turns_ok = sum(1 for o in outcomes for t in o.turns if not t.failures)
    print(
        f"{'all':<14} {passed:>6}/{len(outcomes):<3} ({100 * passed / len(outcomes):5.1f}%) "
        f"{turns_ok:>4}/{turns:<3}   {seconds:.1f} s"
    )
    for outcome in outcomes:
        for turn in outcome.turns:
            if turn.failures:
                print(f"FAIL {outcome.id}: {turn.say!r} -> {turn.model!r}: {turn.failures}")
                print(f"     prompt: {turn.prompt!r}")
    if args.json:
        rows = [o.model_dump() | {"passed": o.passed} for o in outcomes]
        args.json.write_text(json.dumps(rows, indent=1, ensure_ascii=False), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
