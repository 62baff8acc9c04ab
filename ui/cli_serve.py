"""Subcommands of the serve area: `diffagent serve` runs the REST server with uvicorn."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from diffagent.ui.cli_agent import _agent_options, agent_settings

TOKEN_ENV = "DIFFAGENT_SERVER__TOKEN"
SETTINGS_ENV = "DIFFAGENT_SERVE_SETTINGS_JSON"
"""How `serve --workers N` hands its settings to the worker processes."""


def register(commands: Any) -> None:
    """Add this area's subcommands to the top-level parser."""
    parser = commands.add_parser(
        "serve",
        help="Serve the agent over REST (/v1/chat, OpenAI-compatible /v1/chat/completions).",
        description="Serve the agent over REST: POST /v1/chat, OpenAI-compatible "
        "POST /v1/chat/completions (streaming too), GET /healthz.",
    )
    parser.add_argument("--host", default=None, help="Bind address (default 127.0.0.1).")
    parser.add_argument("--port", type=int, default=None, help="Port (default 8000).")
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="Server processes sharing the port (default 1); more than one needs "
        "--database-url (PostgreSQL), which keeps each session's turns in order across them.",
    )
    parser.add_argument(
        "--token",
        default=None,
        help=f"Require 'Authorization: Bearer TOKEN' on /v1/* (default: ${TOKEN_ENV}, else open).",
    )
    # The same agent options as recommend/chat/select, so every command builds the same agent.
    _agent_options(parser)
    parser.add_argument(
        "--db", type=Path, default=None, help="Conversation SQLite file (default: user data dir)."
    )
    parser.add_argument(
        "--database-url",
        default=None,
        help="postgresql://USER@HOST:PORT/DB: conversations on PostgreSQL instead of SQLite "
        "(default: $DIFFAGENT_DATABASE_URL).",
    )
    parser.add_argument(
        "--max-body-bytes",
        type=int,
        default=None,
        help="Larger request bodies get 413 (default 1000000).",
    )
    parser.add_argument(
        "--max-message-chars",
        type=int,
        default=None,
        help="Longer messages get 422 (default 20000).",
    )
    parser.set_defaults(handler=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    """Build the agent (so start-up errors show at once), then serve until interrupted."""
    import uvicorn

    from diffagent.ui.server import create_app  # here, not at the top: keeps `--help` fast
    from diffagent.ui.server_metrics import json_log_config

    if args.port is not None and not 0 < args.port < 65536:
        raise ValueError(f"--port {args.port} is outside 1-65535")
    if args.catalog is not None and not (args.catalog / "cards.jsonl").is_file():
        raise FileNotFoundError(f"no cards.jsonl in --catalog {args.catalog}")
    settings = serve_settings(args)
    options: dict[str, Any] = {
        "host": settings.server.host,
        "port": settings.server.port,
        "log_config": json_log_config(),  # JSON lines with request ids
        "access_log": False,  # the app logs each request itself, with its id
    }
    workers = settings.server.workers
    if workers > 1:
        if settings.database_url is None:
            raise ValueError(
                f"--workers {workers} needs --database-url (PostgreSQL): a SQLite file serves "
                "one process"
            )
        _create_agent(settings).close()  # start-up errors show here, once
        os.environ[SETTINGS_ENV] = settings.model_dump_json()
        uvicorn.run(f"{__name__}:worker_app", factory=True, workers=workers, **options)
        return 0
    agent = _create_agent(settings)
    uvicorn.run(create_app(agent, server=settings.server), **options)
    return 0


def worker_app() -> Any:
    """The app each process of `serve --workers N` runs (settings passed by the parent)."""
    from diffagent.agent.settings import Settings
    from diffagent.ui.server import create_app

    settings = Settings.model_validate_json(os.environ[SETTINGS_ENV])
    return create_app(_create_agent(settings), server=settings.server)


def serve_settings(args: argparse.Namespace) -> Any:
    """The settings `serve` runs with: DIFFAGENT_* settings, then the flags that were given."""
    return agent_settings(
        args,
        **{
            "paths.database": args.db,
            "database_url": args.database_url,
            "server.host": args.host,
            "server.port": args.port,
            "server.workers": args.workers,
            "server.token": args.token or None,
            "server.max_body_bytes": args.max_body_bytes,
            "server.max_message_chars": args.max_message_chars,
        },
    )


def _create_agent(settings: Any) -> Any:
    """The agent `serve` runs (conversations persist: never ephemeral)."""
    from diffagent.agent.service import DiffAgent

    return DiffAgent.create(settings)
