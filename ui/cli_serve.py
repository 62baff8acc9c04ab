"""Subcommands of the serve area (thin: parse arguments, call the library, print)."""

from __future__ import annotations

from typing import Any


def register(commands: Any) -> None:
    """Add this area's subcommands to the top-level parser."""
    del commands  # filled in by the serve work
