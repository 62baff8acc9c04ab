"""REST server over the DiffAgent facade: `/v1/chat`, OpenAI-compatible `/v1/chat/completions`.

Thin by design: it validates requests, maps sessions and errors, and runs the (blocking) agent in
Starlette's thread pool so concurrent sessions proceed in parallel. All logic lives in the agent.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Protocol

from fastapi import FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sse_starlette import EventSourceResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from diffagent.agent.service import TurnResult
from diffagent.agent.settings import ServerSettings, Settings
from diffagent.errors import DiffAgentError, UnknownSessionError
from diffagent.paths import user_data_dir

logger = logging.getLogger(__name__)

MODEL_NAME = "diffagent"
SESSION_HEADER = "X-Session-Id"
IMAGE_NAME = re.compile(r"[\w.-]+\.(png|jpg|jpeg|webp)")


class AgentLike(Protocol):
    """The part of `diffagent.agent.service.DiffAgent` the server calls."""

    def new_session(self) -> str:
        """Create a conversation and return its id."""
        ...

    def reply(self, session_id: str, message: str) -> TurnResult:
        """Run one turn; raises `UnknownSessionError` for unknown ids."""
        ...

    def history(self, session_id: str) -> list[dict[str, Any]]:
        """The conversation so far as role/content dicts."""
        ...


class ChatRequest(BaseModel):
    """Body of `POST /v1/chat`."""

    model_config = ConfigDict(extra="forbid")

    session_id: str | None = Field(default=None, description="Omit to start a new conversation.")
    message: str = Field(description="The user's message.")


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


class OpenAIMessage(BaseModel):
    """One message of an OpenAI chat request (content as text or a list of parts)."""

    model_config = ConfigDict(extra="allow")

    role: str
    content: str | list[dict[str, Any]] | None = None


class CompletionRequest(BaseModel):
    """Body of the OpenAI-compatible `POST /v1/chat/completions` (sampling fields ignored)."""

    model_config = ConfigDict(extra="allow")

    model: str = MODEL_NAME
    messages: list[OpenAIMessage] = Field(min_length=1)
    stream: bool = False
    user: str | None = Field(default=None, description="DiffAgent session id (or the header).")


def _error_body(status: int, message: str) -> dict[str, Any]:
    kinds = {
        400: "invalid_request_error",
        401: "authentication_error",
        404: "not_found_error",
        413: "request_too_large",
        422: "invalid_request_error",
    }
    return {
        "error": {
            "message": message,
            "type": kinds.get(status, "invalid_request_error" if status < 500 else "server_error"),
            "code": status,
        }
    }


def error_response(
    status: int, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    """A JSON error in OpenAI's shape: `{"error": {"message", "type", "code"}}`."""
    return JSONResponse(_error_body(status, message), status_code=status, headers=headers)


class _GuardMiddleware:
    """Bearer-token check on /v1/* and a request-body size limit, before any body is parsed."""

    def __init__(self, app: ASGIApp, settings: ServerSettings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {key.decode("latin-1").lower(): value for key, value in scope["headers"]}
        token = self.settings.token
        if token is not None and scope["path"].startswith("/v1"):
            scheme, _, given = headers.get("authorization", b"").decode("latin-1").partition(" ")
            if scheme.lower() != "bearer" or not secrets.compare_digest(given.strip(), token):
                response = error_response(
                    401,
                    "missing or wrong bearer token; send 'Authorization: Bearer <token>'",
                    {"WWW-Authenticate": "Bearer"},
                )
                await response(scope, receive, send)
                return
        limit = self.settings.max_body_bytes
        too_large = f"request body is larger than {limit} bytes"
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await error_response(413, too_large)(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            # Chunked bodies carry no content-length: count as they arrive.
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise HTTPException(status_code=413, detail=too_large)
            return message

        await self.app(scope, limited_receive, send)


class _AgentHolder:
    """Builds the agent once, on first use, from the factory (thread-safe)."""

    def __init__(self, factory: Callable[[], AgentLike]) -> None:
        self._factory = factory
        self._agent: AgentLike | None = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._agent is not None

    def get(self) -> AgentLike:
        with self._lock:
            if self._agent is None:
                self._agent = self._factory()
            return self._agent


def _validation_message(error: RequestValidationError) -> tuple[int, str]:
    problems = []
    for item in error.errors():
        if item.get("type") == "json_invalid":
            detail = item.get("ctx", {}).get("error", "")
            return 400, f"request body is not valid JSON{': ' + str(detail) if detail else ''}"
        location = ".".join(str(part) for part in item.get("loc", ()) if part != "body")
        problems.append(f"{location or 'body'}: {item.get('msg', 'invalid')}")
    return 422, "invalid request: " + "; ".join(problems)


def _latest_user_text(messages: list[OpenAIMessage]) -> str:
    for message in reversed(messages):
        if message.role != "user":
            continue
        if isinstance(message.content, list):
            texts = [part.get("text", "") for part in message.content if part.get("type") == "text"]
            return "\n".join(texts)
        return message.content or ""
    raise HTTPException(status_code=422, detail="messages contain no message with role 'user'")


def _chunks(text: str, words_per_chunk: int = 4) -> list[str]:
    """Split a reply into small pieces for streaming; joining them gives the text back."""
    pieces = re.findall(r"\s*\S+\s*", text) or ([text] if text else [])
    return [
        "".join(pieces[start : start + words_per_chunk])
        for start in range(0, len(pieces), words_per_chunk)
    ]


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

    holder = _AgentHolder(factory)
    images_root = (image_dir or user_data_dir() / "images").resolve()
    app = FastAPI(
        title="DiffAgent",
        description="Pick the Stable Diffusion model and parameters for a prompt, in chat.",
        version="0.1.0",
    )
    app.state.settings = settings
    app.state.agent_holder = holder
    app.add_middleware(_GuardMiddleware, settings=settings)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, error: HTTPException) -> JSONResponse:
        return error_response(error.status_code, str(error.detail), dict(error.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        status, message = _validation_message(error)
        return error_response(status, message)

    @app.exception_handler(Exception)
    async def _crash(request: Request, error: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s", request.url.path)
        return error_response(500, f"internal error ({type(error).__name__}); see the server log")

    def check_message(message: str) -> str:
        text = message.strip()
        if not text:
            raise HTTPException(422, "message is empty; describe the image you want")
        if len(text) > settings.max_message_chars:
            raise HTTPException(
                422,
                f"message is {len(text)} characters; at most {settings.max_message_chars} allowed",
            )
        return text

    async def call_agent(method: str, *args: str) -> Any:
        """Run an agent method in the thread pool; map its errors to JSON errors."""
        try:
            the_agent = await run_in_threadpool(holder.get)
            return await run_in_threadpool(getattr(the_agent, method), *args)
        except UnknownSessionError as error:
            raise HTTPException(
                404, f"unknown session_id {args[0]!r}; omit it to start a new session"
            ) from error
        except DiffAgentError as error:
            if error.status >= 500:
                logger.exception("agent.%s failed", method)
            raise HTTPException(error.status, str(error)) from error
        except Exception as error:
            logger.exception("agent.%s failed", method)
            raise HTTPException(
                500, f"internal error ({type(error).__name__}: {error}); see the server log"
            ) from error

    async def run_turn(session_id: str | None, message: str) -> ChatResponse:
        text = check_message(message)
        if session_id is None:
            session_id = await call_agent("new_session")
        result = await call_agent("reply", session_id, text)
        data = result.model_dump(mode="json") if isinstance(result, BaseModel) else dict(result)
        data["session_id"] = session_id
        data["image_urls"] = [
            f"/v1/images/{Path(path).name}"
            for path in data.get("images") or []
            if Path(path).resolve().parent == images_root
        ]
        return ChatResponse.model_validate(data)

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        """Liveness: always answers; says whether the agent is loaded yet."""
        return {"status": "ok", "agent_loaded": holder.loaded}

    @app.post("/v1/sessions")
    async def new_session() -> dict[str, str]:
        """Start a conversation; its id goes in `session_id`, the `user` field or the header."""
        return {"session_id": await call_agent("new_session")}

    @app.get("/v1/sessions/{session_id}/history")
    async def history(session_id: str) -> dict[str, Any]:
        """The messages of a conversation, in order."""
        messages = await call_agent("history", session_id)
        return {"session_id": session_id, "messages": messages}

    @app.post("/v1/chat", response_model=ChatResponse)
    async def chat(request: ChatRequest) -> ChatResponse:
        """One chat turn; a missing `session_id` starts a new conversation."""
        return await run_turn(request.session_id, request.message)

    @app.get("/v1/images/{name}", response_model=None)
    async def image(name: str) -> FileResponse:
        """A generated image, by the file name given in `image_urls`."""
        path = images_root / name
        if not IMAGE_NAME.fullmatch(name) or not path.is_file():
            raise HTTPException(404, f"no image named {name!r}")
        return FileResponse(path)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        """The single model this server speaks as (OpenAI `models.list`)."""
        return {
            "object": "list",
            "data": [{"id": MODEL_NAME, "object": "model", "created": 0, "owned_by": "diffagent"}],
        }

    @app.post("/v1/chat/completions", response_model=None)
    async def completions(
        request: CompletionRequest,
        x_session_id: str | None = Header(default=None, alias=SESSION_HEADER),
    ) -> JSONResponse | EventSourceResponse:
        """OpenAI-compatible chat: the latest user message is one turn of the session.

        The session comes from the `X-Session-Id` header or the `user` field; without either,
        a new one is started. Its id is returned in the header and as `session_id`.
        """
        text = _latest_user_text(request.messages)
        turn = await run_turn(x_session_id or request.user, text)
        extra = turn.model_dump(mode="json")
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        headers = {SESSION_HEADER: turn.session_id}
        base = {"id": completion_id, "created": created, "model": request.model}
        if not request.stream:
            body = {
                **base,
                "object": "chat.completion",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": turn.reply},
                        "finish_reason": "stop",
                    }
                ],
                "session_id": turn.session_id,
                "diffagent": extra,
            }
            return JSONResponse(body, headers=headers)

        def chunk(delta: dict[str, Any], finish: str | None, **more: Any) -> dict[str, str]:
            payload = {
                **base,
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                "session_id": turn.session_id,
                **more,
            }
            return {"data": json.dumps(payload)}

        async def events() -> AsyncIterator[dict[str, str]]:
            yield chunk({"role": "assistant", "content": ""}, None)
            for piece in _chunks(turn.reply):
                yield chunk({"content": piece}, None)
            yield chunk({}, "stop", diffagent=extra)
            yield {"data": "[DONE]"}

        return EventSourceResponse(events(), headers=headers, sep="\n")

    return app
