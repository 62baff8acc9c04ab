"""A stub OpenAI-compatible planner server for tests and benches: slow on purpose, no model.

    python -m diffagent.tools.testing.stub_openai --port 8011 --delay 0.3

`/v1/chat/completions` answers DiffAgent's generate prompt with the first candidate it lists
(as the planner's JSON API) after `delay` seconds, streamed in pieces `interval` seconds apart
when asked to stream. `/v1/completions` with `echo` and `logprobs` (rank mode) scores each prompt
word by its length, after the same delay. The app records when each answer finished and how
many streams their client cut off (`app.state.stats`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

MODEL = "stub-planner"
_CANDIDATES = re.compile(r"<candidates>\n(.*?)\n</candidates>", re.S)


@dataclass
class StubStats:
    """What the stub served: finish times (time.monotonic) and streams cut off by the client."""

    finished: list[float] = field(default_factory=list)
    cancelled: int = 0
    requests: int = 0


def planner_answer(messages: list[dict[str, Any]]) -> str:
    """The JSON API a planner would write: the first candidate of the generate prompt."""
    text = "\n".join(str(m.get("content") or "") for m in messages)
    found = _CANDIDATES.search(text)
    if found is None:
        return '{"model": "unknown"}'
    first = json.loads(found.group(1).splitlines()[0])
    width, height = (int(v) for v in first["recommended"].split(",")[0].split("x"))
    return json.dumps(
        {
            "model": first["model"],
            "version_id": first["version_id"],
            "type": first["type"],
            "base_model": first["base_model"],
            "width": width,
            "height": height,
        }
    )


def pieces(text: str, count: int) -> list[str]:
    """`text` cut into `count` pieces (fewer for short text); joined they give it back."""
    size = max(1, -(-len(text) // count))
    return [text[start : start + size] for start in range(0, len(text), size)]


def create_stub_app(delay_s: float = 0.3, interval_s: float = 0.0, n_pieces: int = 8) -> FastAPI:
    """The stub server: first answer after `delay_s`, stream pieces `interval_s` apart."""
    app = FastAPI(title="stub OpenAI planner")
    stats = StubStats()
    app.state.stats = stats

    def completion_id() -> str:
        return f"chatcmpl-{uuid.uuid4().hex[:12]}"

    @app.get("/stats")
    async def served() -> dict[str, Any]:
        return {
            "requests": stats.requests,
            "finished": len(stats.finished),
            "cancelled": stats.cancelled,
        }

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "stub"}]}

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(request: Request) -> JSONResponse | StreamingResponse:
        body = await request.json()
        stats.requests += 1
        answer = planner_answer(body.get("messages") or [])
        await asyncio.sleep(delay_s)
        if not body.get("stream"):
            stats.finished.append(time.monotonic())
            return JSONResponse(
                {
                    "id": completion_id(),
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": MODEL,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": answer},
                            "finish_reason": "stop",
                        }
                    ],
                }
            )
        cid = completion_id()

        def chunk(delta: dict[str, Any], finish: str | None) -> str:
            data = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": MODEL,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            return f"data: {json.dumps(data)}\n\n"

        async def events() -> Any:
            try:
                yield chunk({"role": "assistant", "content": ""}, None)
                for number, piece in enumerate(pieces(answer, n_pieces)):
                    if number and interval_s:
                        await asyncio.sleep(interval_s)
                    yield chunk({"content": piece}, None)
                yield chunk({}, "stop")
                yield "data: [DONE]\n\n"
                stats.finished.append(time.monotonic())
            except asyncio.CancelledError:
                stats.cancelled += 1
                raise

        return StreamingResponse(events(), media_type="text/event-stream")

    @app.post("/v1/completions")
    async def completions(request: Request) -> dict[str, Any]:
        body = await request.json()
        stats.requests += 1
        prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
        await asyncio.sleep(delay_s)
        choices = []
        for index, prompt in enumerate(prompts):
            words = [(m.start(), m.group()) for m in re.finditer(r"\s*\S+", prompt)]
            choices.append(
                {
                    "index": index,
                    "text": prompt,
                    "finish_reason": "length",
                    "logprobs": {
                        "tokens": [word for _, word in words],
                        "token_logprobs": [None] + [-0.1 * len(w) for _, w in words[1:]],
                        "text_offset": [start for start, _ in words],
                        "top_logprobs": None,
                    },
                }
            )
        stats.finished.append(time.monotonic())
        return {
            "id": completion_id(),
            "object": "text_completion",
            "model": MODEL,
            "choices": choices,
        }

    return app


def main() -> None:
    """Serve the stub with uvicorn until interrupted."""
    import uvicorn  # noqa: PLC0415

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8011)
    parser.add_argument("--delay", type=float, default=0.3, help="Seconds to the first token.")
    parser.add_argument("--interval", type=float, default=0.0, help="Seconds between pieces.")
    args = parser.parse_args()
    app = create_stub_app(args.delay, args.interval)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
