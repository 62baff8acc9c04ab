"""REST server guards: JSON errors in OpenAI's shape, the bearer token and the body size limit."""

from __future__ import annotations

import hashlib
import secrets
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from diffagent.agent.settings import ServerSettings

_KINDS = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    413: "request_too_large",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


def error_body(status: int, message: str) -> dict[str, Any]:
    """`{"error": {"message", "type", "code"}}` for an HTTP status."""
    kind = _KINDS.get(status, "invalid_request_error" if status < 500 else "server_error")
    return {"error": {"message": message, "type": kind, "code": status}}


def error_response(
    status: int, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    """A JSON error in OpenAI's shape: `{"error": {"message", "type", "code"}}`."""
    return JSONResponse(error_body(status, message), status_code=status, headers=headers)


def token_matches(header: bytes, token: str) -> bool:
    """Whether an `Authorization` header value is `Bearer <token>` (compared as UTF-8 bytes)."""
    scheme, _, given = header.partition(b" ")
    expected = token.encode("utf-8")
    return scheme.lower() == b"bearer" and secrets.compare_digest(given.strip(), expected)


class GuardMiddleware:
    """Bearer-token check on /v1/* and a request-body size limit, before any route runs.

    The body is read here, whatever the route does with it: a route that never reads its body
    still cannot be sent more than `max_body_bytes` (chunked bodies included).
    """

    def __init__(
        self,
        app: ASGIApp,
        settings: ServerSettings,
        on_error: Callable[[str, int], None] | None = None,
    ) -> None:
        self.app = app
        self.settings = settings
        self.on_error = on_error or (lambda kind, status: None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer 401 or 413 itself; otherwise pass the request on with its body replayed."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {key.decode("latin-1").lower(): value for key, value in scope["headers"]}
        token = self.settings.token
        if token is not None and scope["path"].startswith("/v1"):
            if not token_matches(headers.get("authorization", b""), token):
                self.on_error("authentication_error", 401)
                response = error_response(
                    401,
                    "missing or wrong bearer token; send 'Authorization: Bearer <token>'",
                    {"WWW-Authenticate": "Bearer"},
                )
                await response(scope, receive, send)
                return
        limit = self.settings.max_body_bytes
        too_large = error_response(413, f"request body is larger than {limit} bytes")
        length = headers.get("content-length", b"").decode("latin-1")
        if length.isdigit() and int(length) > limit:
            self.on_error("request_too_large", 413)
            await too_large(scope, receive, send)
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay([message], receive), send)  # client went away
                return
            body += message.get("body", b"")
            if len(body) > limit:
                self.on_error("request_too_large", 413)
                await too_large(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        first: Message = {"type": "http.request", "body": bytes(body), "more_body": False}
        await self.app(scope, _replay([first], receive), send)


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """A receive that yields `messages` first, then whatever `receive` yields (disconnects)."""
    pending = list(messages)

    async def replayed() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed


def client_key(request: Request) -> str:
    """Who is asking: a digest of the bearer token when one is sent, else the client address."""
    auth = request.headers.get("authorization")
    if auth:
        return "token:" + hashlib.sha256(auth.encode("latin-1", "replace")).hexdigest()[:16]
    return "addr:" + (request.client.host if request.client else "unknown")


class TurnLimiter:
    """At most `limit` turns in flight per client; one more is answered 429 with Retry-After."""

    def __init__(self, limit: int, retry_after_s: int = 1) -> None:
        self.limit = limit
        self.retry_after_s = retry_after_s
        self._lock = threading.Lock()
        self._running: dict[str, int] = {}

    @contextmanager
    def slot(self, client: str) -> Iterator[None]:
        """Hold one of the client's turn slots for the block (HTTPException 429 if none)."""
        with self._lock:
            running = self._running.get(client, 0)
            if running >= self.limit:
                raise HTTPException(
                    429,
                    f"too many turns at once: at most {self.limit} per client; retry shortly",
                    headers={"Retry-After": str(self.retry_after_s)},
                )
            self._running[client] = running + 1
        try:
            yield
        finally:
            with self._lock:
                left = self._running[client] - 1
                if left:
                    self._running[client] = left
                else:
                    del self._running[client]
