"""The `diffagent` command line: one parser, subcommands registered by each area's thin module."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from diffagent.errors import DiffAgentError
from diffagent.ui import (
    cli_agent,
    cli_catalog,
    cli_chainlit,
    cli_finetune,
    cli_index,
    cli_score,
    cli_serve,
    cli_tools,
)


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="diffagent",
        description="Pick the Stable Diffusion model and parameters for a prompt, then generate.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    cli_catalog.register(commands)
    cli_index.register(commands)
    cli_tools.register(commands)
    cli_score.register(commands)
    cli_agent.register(commands)
    cli_serve.register(commands)
    cli_chainlit.register(commands)
    cli_finetune.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (DiffAgentError, ValueError, FileNotFoundError, PermissionError) as error:
        # Expected user errors: one line, no traceback.
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
