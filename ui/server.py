"""REST server over the DiffAgent facade: `/v1/chat`, OpenAI-compatible `/v1/chat/completions`.

Thin by design: it validates requests, maps sessions and errors, and runs the (blocking) agent in
Starlette's thread pool so concurrent sessions proceed in parallel. All logic lives in the agent.
Turns can stream (server-sent events: steps, the planner's tokens, the result); a client that
goes away cancels its turn (`ui/server_stream.py`).
"""

from __future__ import annotations

import logging
import os
import re
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sse_starlette import EventSourceResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from diffagent.agent.service import StepCallback, TurnResult
from diffagent.agent.sessions import check_text
from diffagent.agent.settings import ServerSettings, Settings
from diffagent.agent.streaming import TokenCallback, TurnCancelledError
from diffagent.errors import BadInputError, DiffAgentError, UnknownSessionError
from diffagent.paths import user_data_dir
from diffagent.ui.server_guard import (
    GuardMiddleware,
    TurnLimiter,
    client_key,
    error_body,
    error_response,
)
from diffagent.ui.server_metrics import Metrics, RequestIdMiddleware
from diffagent.ui.server_openai import MODEL_NAME, SESSION_HEADER, add_openai_routes
from diffagent.ui.server_stream import (
    LiveTurn,
    TurnEvent,
    TurnHandlers,
    first_event,
    result_of,
    sse,
    sse_events,
)

__all__ = ["MODEL_NAME", "SESSION_HEADER", "ChatRequest", "ChatResponse", "create_app"]

logger = logging.getLogger(__name__)

IMAGE_NAME = re.compile(r"[\w.-]+\.(png|jpg|jpeg|webp)")
SESSION_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
"""What a session id may look like (ids are made by the agent: 32 hex digits)."""


class AgentLike(Protocol):
    """The part of `diffagent.agent.service.DiffAgent` the server calls."""

    def new_session(self) -> str:
        """Create a conversation and return its id."""
        ...

    def reply(
        self,
        session_id: str | None,
        message: str,
        on_step: StepCallback | None = None,
        *,
        on_token: TokenCallback | None = None,
        cancel: threading.Event | None = None,
        new_id: str | None = None,
    ) -> TurnResult:
        """Run one turn (None: in a new session `new_id`, made only if the turn succeeds).

        Raises `UnknownSessionError` for unknown ids; stops (TurnCancelledError) when `cancel` is
        set; reports steps and planner tokens as they happen.
        """
        ...

    def history(self, session_id: str) -> list[dict[str, Any]]:
        """The conversation so far as role/content dicts."""
        ...


class ChatRequest(BaseModel):
    """Body of `POST /v1/chat`."""

    model_config = ConfigDict(extra="forbid")

    session_id: str | None = Field(
        default=None,
        max_length=128,
        pattern=SESSION_ID.pattern,
        description="Omit to start a new conversation.",
    )
    message: str = Field(description="The user's message.")
    stream: bool = Field(
        default=False,
        description="Answer as server-sent events: steps and planner tokens as they happen, "
        "then the turn (`done`) or an `error` event.",
    )


class ChatResponse(BaseModel):
    """Body returned by `POST /v1/chat`: one agent turn."""

    model_config = ConfigDict(extra="ignore")

    session_id: str
    reply: str = Field(description="Markdown answer for the user.")
    api: dict[str, Any] | None = Field(default=None, description="The chosen T2I API, if any.")
    card: dict[str, Any] | None = Field(default=None, description="The chosen model card, if any.")
    why: str = ""
    repairs: list[dict[str, Any]] = Field(default_factory=list)
    hallucinated: bool = False
    images: list[str] = Field(default_factory=list, description="Image file paths on the server.")
    image_urls: list[str] = Field(
        default_factory=list, description="The images as `/v1/images/NAME` (same order)."
    )
    scores: dict[str, Any] | None = None
    exports: dict[str, str] = Field(default_factory=dict)
    intent: str | None = Field(default=None, description="image, question, nsfw or empty.")
    changes: list[str] = Field(default_factory=list, description="What this message changed.")


class _AgentHolder:
    """Builds the agent once, on first use, from the factory (thread-safe)."""

    def __init__(self, factory: Callable[[], AgentLike], agent: AgentLike | None = None) -> None:
        self._factory = factory
        self._agent = agent
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        """Whether the agent has been built (always, when it was given built)."""
        return self._agent is not None

    def get(self) -> AgentLike:
        """The agent, built now if it was not yet."""
        with self._lock:
            if self._agent is None:
                self._agent = self._factory()
            return self._agent


def _short(text: str, limit: int = 40) -> str:
    """`text` cut to `limit` characters for echoing in an error message."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _validation_message(error: RequestValidationError) -> tuple[int, str]:
    problems = []
    for item in error.errors():
        if item.get("type") == "json_invalid":
            detail = item.get("ctx", {}).get("error", "")
            return 400, f"request body is not valid JSON{': ' + str(detail) if detail else ''}"
        location = ".".join(str(part) for part in item.get("loc", ()) if part != "body")
        problems.append(f"{location or 'body'}: {item.get('msg', 'invalid')}")
    return 422, "invalid request: " + "; ".join(problems)


def create_app(
    agent: AgentLike | None = None,
    *,
    agent_factory: Callable[[], AgentLike] | None = None,
    config: Settings | None = None,
    server: ServerSettings | None = None,
    token: str | None = None,
    max_body_bytes: int | None = None,
    max_message_chars: int | None = None,
    image_dir: Path | None = None,
) -> FastAPI:
    """Build the FastAPI app over one agent.

    Give at most one of `agent` (already built), `agent_factory` (called on first use) or
    `config` (`Settings` for `DiffAgent.create`); with none, the default settings are used.
    `server` holds the limits and token (default: `config.server`, else the defaults); `token`,
    `max_body_bytes` and `max_message_chars` override it.
    `image_dir` is the folder generated images are served from (default: the agent's default,
    `user_data_dir()/images`); images elsewhere are listed by path only.
    """
    if sum(value is not None for value in (agent, agent_factory, config)) > 1:
        raise ValueError("give at most one of agent, agent_factory or config")
    try:
        base = server or (config.server if config is not None else ServerSettings())
        overrides = {
            "token": token or None,
            "max_body_bytes": max_body_bytes,
            "max_message_chars": max_message_chars,
        }
        settings = ServerSettings.model_validate(
            {
                **base.model_dump(),
                **{key: value for key, value in overrides.items() if value is not None},
            }
        )
    except ValidationError as error:
        first = error.errors()[0]
        raise ValueError(f"{first['loc'][0]}: {first['msg']}") from error
    if agent is not None:
        built = agent
        factory: Callable[[], AgentLike] = lambda: built  # noqa: E731
    elif agent_factory is not None:
        factory = agent_factory
    else:

        def factory() -> AgentLike:
            from diffagent.agent.service import DiffAgent

            return DiffAgent.create(config)

    holder = _AgentHolder(factory, agent)
    images_root = (image_dir or user_data_dir() / "images").resolve()
    app = FastAPI(
        title="DiffAgent",
        description="Pick the Stable Diffusion model and parameters for a prompt, in chat.",
        version="0.1.0",
    )
    metrics = Metrics()
    limiter = TurnLimiter(settings.max_turns_per_client)
    app.state.settings = settings
    app.state.agent_holder = holder
    app.state.metrics = metrics
    app.add_middleware(GuardMiddleware, settings=settings, on_error=metrics.error)
    app.add_middleware(RequestIdMiddleware)  # outermost: guard refusals get an id too

    def answer_error(
        status: int, message: str, cause: BaseException, headers: dict[str, str] | None = None
    ) -> JSONResponse:
        named = type(cause).__name__
        if named in ("HTTPException", "RequestValidationError"):
            named = error_body(status, message)["error"]["type"]  # the request's fault: its kind
        metrics.error(named, status)
        return error_response(status, message, headers)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, error: HTTPException) -> JSONResponse:
        cause = error.__cause__ or error
        headers = dict(error.headers or {})
        return answer_error(error.status_code, str(error.detail), cause, headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        status, message = _validation_message(error)
        return answer_error(status, message, error)

    @app.exception_handler(Exception)
    async def _crash(request: Request, error: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s", request.url.path)
        message = f"internal error ({type(error).__name__}); see the server log"
        return answer_error(500, message, error)

    def check_message(message: str) -> str:
        try:
            text = check_text(message).strip()
        except BadInputError as error:
            raise HTTPException(422, str(error)) from None
        if not text:
            raise HTTPException(422, "message is empty; describe the image you want")
        if len(text) > settings.max_message_chars:
            raise HTTPException(
                422,
                f"message is {len(text)} characters; at most {settings.max_message_chars} allowed",
            )
        return text

    def http_error(error: BaseException, session_id: str | None = None) -> HTTPException:
        """The HTTP error an agent failure is answered with (logged when it is the server's)."""
        if isinstance(error, HTTPException):
            return error
        if isinstance(error, UnknownSessionError):
            status = 404
            message = (
                f"unknown session_id {_short(str(session_id))!r}; omit it to start a new session"
            )
        elif isinstance(error, TurnCancelledError):
            status, message = 499, "the client went away; the turn was cancelled and not stored"
        elif isinstance(error, DiffAgentError):
            status, message = error.status, str(error)
        else:
            status = 500
            message = f"internal error ({type(error).__name__}: {error}); see the server log"
        if status >= 500:
            logger.error("the agent failed", exc_info=error)
        mapped = HTTPException(status, message)
        mapped.__cause__ = error
        return mapped

    async def call_agent(method: str, *args: str | None) -> Any:
        """Run an agent method in the thread pool; map its errors to JSON errors."""
        try:
            the_agent = await run_in_threadpool(holder.get)
            return await run_in_threadpool(getattr(the_agent, method), *args)
        except Exception as error:
            raise http_error(error, args[0] if args else None) from error

    def check_session_id(session_id: str) -> str:
        if not SESSION_ID.fullmatch(session_id):
            raise HTTPException(
                404,
                f"unknown session_id {_short(session_id)!r}; session ids are 1-128 letters, "
                "digits, '-' or '_'",
            )
        return session_id

    def start_turn(
        request: Request, session_id: str | None, message: str, stream: bool = False
    ) -> tuple[LiveTurn, str | None]:
        """Check the request and start its turn; return it and the session id (new or given)."""
        text = check_message(message)
        if session_id is not None:
            check_session_id(session_id)
        new_id = uuid.uuid4().hex if session_id is None else None
        key = client_key(request)

        def work(on_step: StepCallback, on_token: TokenCallback, cancel: threading.Event) -> Any:
            the_agent = holder.get()
            if not stream:
                return the_agent.reply(session_id, text, cancel=cancel, new_id=new_id)
            return the_agent.reply(
                session_id, text, on_step, on_token=on_token, cancel=cancel, new_id=new_id
            )

        @contextmanager
        def guard() -> Iterator[None]:
            with limiter.slot(key), metrics.turn():
                yield

        return LiveTurn(work, guard), session_id or new_id

    def to_response(result: Any, session_id: str | None) -> ChatResponse:
        """The `/v1/chat` body of a finished turn."""
        data = result.model_dump(mode="json") if isinstance(result, BaseModel) else dict(result)
        data["session_id"] = data.get("session_id") or session_id
        data["image_urls"] = [
            f"/v1/images/{Path(path).name}"
            for path in data.get("images") or []
            if _servable(images_root, Path(path))
        ]
        return ChatResponse.model_validate(data)

    async def run_turn(request: Request, session_id: str | None, message: str) -> ChatResponse:
        """One whole turn; the client going away cancels it."""
        turn, sid = start_turn(request, session_id, message)
        try:
            result = await result_of(turn, request)
        except BaseException as error:
            raise http_error(error, session_id) from error
        return to_response(result, sid)

    def error_event(error: BaseException, session_id: str | None) -> dict[str, Any]:
        """The body of a failure after the stream started (counted like an HTTP error)."""
        mapped = http_error(error, session_id)
        metrics.error(type(error).__name__, mapped.status_code)
        return error_body(mapped.status_code, str(mapped.detail))

    handlers = TurnHandlers(
        start=start_turn,
        run=run_turn,
        error=http_error,
        error_event=error_event,
        response=to_response,
    )

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        """Liveness: always answers; says whether the agent is loaded yet, and which process."""
        return {"status": "ok", "agent_loaded": holder.loaded, "worker": os.getpid()}

    @app.get("/metrics")
    async def prometheus() -> Response:
        """Prometheus metrics: turn latency, turns in flight, errors by type."""
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    @app.post("/v1/sessions")
    async def new_session() -> dict[str, str]:
        """Start a conversation; its id goes in `session_id`, the `user` field or the header."""
        return {"session_id": await call_agent("new_session")}

    @app.get("/v1/sessions/{session_id}/history")
    async def history(session_id: str) -> dict[str, Any]:
        """The messages of a conversation, in order."""
        messages = await call_agent("history", check_session_id(session_id))
        return {"session_id": session_id, "messages": messages}

    @app.post("/v1/chat", response_model=ChatResponse)
    async def chat(http: Request, request: ChatRequest) -> Any:
        """One chat turn; a missing `session_id` starts a new conversation.

        With `stream`, server-sent events: `step` and `token` as they happen, then `done` (the
        turn) or `error`; errors before the first event are plain HTTP errors.
        """
        if not request.stream:
            return await run_turn(http, request.session_id, request.message)
        turn, sid = start_turn(http, request.session_id, request.message, stream=True)
        try:
            first = await first_event(turn, http)
        except BaseException as error:
            raise http_error(error, request.session_id) from error

        async def render(event: TurnEvent) -> dict[str, str]:
            if event.kind == "step":
                return sse("step", event.data)
            if event.kind == "token":
                return sse("token", {"text": event.data})
            if event.kind == "done":
                return sse("done", to_response(event.data, sid).model_dump(mode="json"))
            return sse("error", error_event(event.data, request.session_id))

        headers = {SESSION_HEADER: sid} if sid else {}
        return EventSourceResponse(sse_events(turn, first, render), headers=headers, sep="\n")

    @app.get("/v1/images/{name}", response_model=None)
    async def image(name: str) -> FileResponse:
        """A generated image, by the file name given in `image_urls`."""
        path = images_root / name
        if not IMAGE_NAME.fullmatch(name) or not _servable(images_root, path):
            raise HTTPException(404, f"no image named {_short(name)!r}")
        return FileResponse(path)

    add_openai_routes(app, handlers)
    return app


def _servable(images_root: Path, path: Path) -> bool:
    """A regular file directly in the image folder: no symlink, nothing resolving elsewhere."""
    return (
        not path.is_symlink() and path.resolve().parent == images_root and path.resolve().is_file()
    )
