"""Live output of a running turn: the planner's text as it is written, and cancelling the turn.

A planner backend that can stream (the OpenAI-compatible one) sends its text to
`current_token_sink()` while `token_sink(callback)` is active in the calling context; the agent
sets it around a turn whose caller listens. Cancelling raises `TurnCancelledError`, a
`BaseException` on purpose: it must pass the handlers that turn a failed planner into a fallback.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

TokenCallback = Callable[[str], None]
"""`on_token(text)`: one piece of the planner's text, in order."""

_sink: ContextVar[TokenCallback | None] = ContextVar("diffagent_token_sink", default=None)


class TurnCancelledError(BaseException):
    """The turn was cancelled (its client went away); the agent rolls it back."""


@contextmanager
def token_sink(callback: TokenCallback) -> Iterator[None]:
    """Send streamed planner text to `callback` while the block runs (in this context)."""
    token = _sink.set(callback)
    try:
        yield
    finally:
        _sink.reset(token)


def current_token_sink() -> TokenCallback | None:
    """Where a planner backend should stream its text now, or None (nobody listens)."""
    return _sink.get()


def check_cancelled(cancel: threading.Event | None) -> None:
    """Raise TurnCancelledError when `cancel` is set."""
    if cancel is not None and cancel.is_set():
        raise TurnCancelledError("the turn was cancelled")
