"""`diffagent ui`: the Chainlit chat UI, with its config and welcome page kept in the package."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

APP_FILE = Path(__file__).with_name("chainlit_app.py")
APP_ROOT = Path(__file__).with_name("chainlit_app")
"""Chainlit's app root: `.chainlit/config.toml`, `chainlit.md` (the welcome page)."""


def register(commands: Any) -> None:
    """Add the `ui` subcommand to the top-level parser."""
    parser = commands.add_parser(
        "ui",
        help="Serve the Chainlit chat UI (agent from DIFFAGENT_* settings).",
        description="Serve the Chainlit chat UI. The agent is built from the DIFFAGENT_* "
        "environment (e.g. DIFFAGENT_INDEX__CATALOG_DIR, DIFFAGENT_GENERATION__MODEL_STORE).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="Bind address (default 127.0.0.1).")
    parser.add_argument("--port", type=int, default=8001, help="Port (default 8001).")
    parser.add_argument("--headless", action="store_true", help="Do not open a browser.")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Start Chainlit on the packaged app; it serves until interrupted."""
    serve(APP_FILE, host=args.host, port=args.port, headless=args.headless)
    return 0


def serve(target: Path, *, host: str, port: int, headless: bool = True) -> None:
    """Run the Chainlit app `target` with the packaged app root (this process only).

    Chainlit reads its app root when first imported, so the variables are set before that.
    """
    os.environ.setdefault("CHAINLIT_APP_ROOT", str(APP_ROOT))
    os.environ["CHAINLIT_HOST"] = host
    os.environ["CHAINLIT_PORT"] = str(port)
    from chainlit.cli import run_chainlit  # noqa: PLC0415
    from chainlit.config import config  # noqa: PLC0415

    config.run.headless = headless
    run_chainlit(str(target))
