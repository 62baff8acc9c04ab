"""Live turns of the REST server: a turn runs in the thread pool while its events are read.

Events come as they happen: `step` (a graph node started or finished), `token` (the planner's
text as it is written), then `done` (the turn result) or `error`. A client that goes away sets
the turn's cancel event; the agent stops at its next node or token and rolls the turn back.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Literal

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request

TurnWork = Callable[
    [Callable[[str, float | None, Any], None], Callable[[str], None], threading.Event], Any
]
"""`work(on_step, on_token, cancel)`: runs the turn (blocking) and returns its result."""


@dataclass(frozen=True)
class TurnHandlers:
    """What routes need to run turns (built by `create_app` over its agent, limits and metrics)."""

    start: Callable[..., tuple[LiveTurn, str | None]]
    """`start(request, session_id, message, stream)`: checks, then the running turn and its id."""
    run: Callable[[Request, str | None, str], Awaitable[Any]]
    """`run(request, session_id, message)`: one whole turn as a `ChatResponse`."""
    error: Callable[[BaseException, str | None], HTTPException]
    """`error(exception, session_id)`: the HTTP error a failure is answered with."""
    error_event: Callable[[BaseException, str | None], dict[str, Any]]
    """`error_event(exception, session_id)`: the error body sent after a stream started."""
    response: Callable[[Any, str | None], Any]
    """`response(result, session_id)`: the `ChatResponse` of a finished turn."""


@dataclass(frozen=True)
class TurnEvent:
    """One thing a running turn did: a step, a piece of planner text, its end or its failure."""

    kind: Literal["step", "token", "done", "error"]
    data: Any


class LiveTurn:
    """An agent turn running in Starlette's thread pool, read as a sequence of events.

    `guard()` is entered around the whole run (the per-client turn slot, the metrics); its
    error (e.g. 429) is the first event. The task is never cancelled: `cancel` stops the turn.
    """

    def __init__(self, work: TurnWork, guard: Callable[[], AbstractContextManager[Any]]) -> None:
        self.cancel = threading.Event()
        self._loop = asyncio.get_running_loop()
        self._events: asyncio.Queue[TurnEvent] = asyncio.Queue()
        self._task = asyncio.create_task(self._run(work, guard))  # kept: tasks are weakly held

    def _push(self, event: TurnEvent) -> None:
        """Queue an event from the worker thread."""
        self._loop.call_soon_threadsafe(self._events.put_nowait, event)

    def _on_step(self, node: str, seconds: float | None, update: Any) -> None:
        data: dict[str, Any] = {
            "node": node,
            "status": "started" if seconds is None else "finished",
        }
        if seconds is not None:
            data["seconds"] = round(seconds, 4)
        self._push(TurnEvent("step", data))

    def _on_token(self, text: str) -> None:
        self._push(TurnEvent("token", text))

    async def _run(self, work: TurnWork, guard: Callable[[], AbstractContextManager[Any]]) -> None:
        try:
            with guard():
                result = await run_in_threadpool(work, self._on_step, self._on_token, self.cancel)
        except BaseException as error:  # noqa: BLE001 - every failure is reported as an event
            self._events.put_nowait(TurnEvent("error", error))
            if isinstance(error, asyncio.CancelledError):
                raise
        else:
            self._events.put_nowait(TurnEvent("done", result))

    async def next(self) -> TurnEvent:
        """The next event (waits for it)."""
        return await self._events.get()


async def cancel_on_disconnect(request: Request, turn: LiveTurn) -> None:
    """Set the turn's cancel event when the client closes the connection (body already read)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
    turn.cancel.set()


async def result_of(turn: LiveTurn, request: Request) -> Any:
    """The turn's result, cancelling the turn if the client goes away; errors are raised."""
    watcher = asyncio.create_task(cancel_on_disconnect(request, turn))
    try:
        while True:
            event = await turn.next()
            if event.kind == "done":
                return event.data
            if event.kind == "error":
                raise event.data
    finally:
        watcher.cancel()


async def first_event(turn: LiveTurn, request: Request, *, skip_steps: bool = False) -> TurnEvent:
    """The turn's first event (its first token or end, with `skip_steps`); errors are raised.

    Until it comes the response has not started, so an error here is a plain HTTP error.
    """
    watcher = asyncio.create_task(cancel_on_disconnect(request, turn))
    try:
        while True:
            event = await turn.next()
            if event.kind == "error":
                raise event.data
            if not (skip_steps and event.kind == "step"):
                return event
    finally:
        watcher.cancel()


async def sse_events(
    turn: LiveTurn,
    first: TurnEvent,
    render: Callable[[TurnEvent], Awaitable[dict[str, str]]],
) -> AsyncIterator[dict[str, str]]:
    """Server-sent events of a turn from `first` to its end; leaving early cancels the turn."""
    event = first
    try:
        while True:
            yield await render(event)
            if event.kind in ("done", "error"):
                return
            event = await turn.next()
    finally:
        turn.cancel.set()  # the client went away (or the turn ended: then it changes nothing)


def sse(event: str, data: Any) -> dict[str, str]:
    """One server-sent event with a JSON payload."""
    return {"event": event, "data": json.dumps(data, ensure_ascii=False)}
