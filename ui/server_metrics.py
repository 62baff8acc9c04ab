"""REST server observability: request ids in structured logs, Prometheus metrics of turns."""

from __future__ import annotations

import contextvars
import json
import logging
import re
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUEST_ID_HEADER = "X-Request-Id"
_CLIENT_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
TURN_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
"""The id of the request being served ("-" outside a request); worker threads inherit it."""

access_log = logging.getLogger("diffagent.access")


class RequestIdFilter(logging.Filter):
    """Adds `request_id` to every log record, so any log line can be tied to its request."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Set `record.request_id`; never drops a record."""
        record.request_id = request_id.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, request_id, message, extra fields."""

    FIELDS = ("method", "path", "status", "duration_ms", "client")

    def format(self, record: logging.LogRecord) -> str:
        """The record as a JSON line (with the traceback, if any, as `exc`)."""
        data = {
            "time": round(record.created, 3),
            "level": record.levelname,
            "logger": record.name,
            "request_id": getattr(record, "request_id", request_id.get()),
            "message": record.getMessage(),
        }
        data.update({key: getattr(record, key) for key in self.FIELDS if hasattr(record, key)})
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False)


def json_log_config(level: str = "INFO") -> dict[str, Any]:
    """A `logging.config.dictConfig` (uvicorn's `log_config`): JSON lines with request ids."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": RequestIdFilter}},
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {
            "json": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "filters": ["request_id"],
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {
            name: {"handlers": ["json"], "level": level, "propagate": False}
            for name in ("diffagent", "uvicorn", "uvicorn.error")
        },
    }


class RequestIdMiddleware:
    """Gives each request an id (the client's `X-Request-Id` if sane), echoes it, logs access."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the request with its id set; log one access line when the response starts."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(REQUEST_ID_HEADER.lower().encode(), b"")
        text = given.decode("latin-1")
        rid = text if _CLIENT_ID.fullmatch(text) else uuid.uuid4().hex
        token = request_id.set(rid)
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    *message.get("headers", []),
                    (REQUEST_ID_HEADER.encode(), rid.encode()),
                ]
                access_log.info(
                    "request",
                    extra={
                        "method": scope["method"],
                        "path": scope["path"],
                        "status": message["status"],
                        "duration_ms": round((time.perf_counter() - started) * 1000, 1),
                    },
                )
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id.reset(token)


class Metrics:
    """Prometheus metrics of one app: turn latency, turns in flight, errors by type."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.turn_seconds = Histogram(
            "diffagent_turn_seconds",
            "Time to answer one chat turn, seconds.",
            ["outcome"],
            buckets=TURN_BUCKETS,
            registry=self.registry,
        )
        self.turns_in_flight = Gauge(
            "diffagent_turns_in_flight", "Chat turns running now.", registry=self.registry
        )
        self.errors = Counter(
            "diffagent_errors",
            "Requests answered with an error, by type.",
            ["type", "status"],
            registry=self.registry,
        )

    @contextmanager
    def turn(self) -> Iterator[None]:
        """Count a turn in flight and time it (outcome ok or error)."""
        started = time.perf_counter()
        outcome = "error"
        self.turns_in_flight.inc()
        try:
            yield
            outcome = "ok"
        finally:
            self.turns_in_flight.dec()
            self.turn_seconds.labels(outcome).observe(time.perf_counter() - started)

    def error(self, kind: str, status: int) -> None:
        """Count one error answer of `kind` (an error type or exception class name)."""
        self.errors.labels(kind, str(status)).inc()

    def render(self) -> bytes:
        """The metrics in Prometheus' text format."""
        return generate_latest(self.registry)
