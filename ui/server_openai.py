"""The OpenAI-compatible routes of the REST server: `/v1/models`, `/v1/chat/completions`."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sse_starlette import EventSourceResponse
from starlette.exceptions import HTTPException

from diffagent.ui.server_stream import TurnHandlers, first_event

MODEL_NAME = "diffagent"
SESSION_HEADER = "X-Session-Id"


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


def latest_user_text(messages: list[OpenAIMessage]) -> str:
    """The text of the last user message; its text parts joined by newlines (422 if none)."""
    for index in range(len(messages) - 1, -1, -1):
        message = messages[index]
        if message.role != "user":
            continue
        if not isinstance(message.content, list):
            return message.content or ""
        texts = []
        for number, part in enumerate(message.content):
            if part.get("type") != "text":
                continue
            text = part.get("text", "")
            if not isinstance(text, str):
                raise HTTPException(
                    422,
                    f"messages.{index}.content.{number}.text must be a string, "
                    f"got {type(text).__name__}",
                )
            texts.append(text)
        return "\n".join(texts)
    raise HTTPException(status_code=422, detail="messages contain no message with role 'user'")


def chunks(text: str, words_per_chunk: int = 4) -> list[str]:
    """Split a reply into small pieces for streaming; joining them gives the text back."""
    pieces = re.findall(r"\s*\S+\s*", text) or ([text] if text else [])
    return [
        "".join(pieces[start : start + words_per_chunk])
        for start in range(0, len(pieces), words_per_chunk)
    ]


DRAFT_OPEN = "Planner draft:\n```json\n"
DRAFT_CLOSE = "\n```\n\n"


def add_openai_routes(app: FastAPI, turns: TurnHandlers) -> None:
    """Add `/v1/models` and `/v1/chat/completions` (plain and streaming) to `app`."""

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        """The single model this server speaks as (OpenAI `models.list`)."""
        return {
            "object": "list",
            "data": [{"id": MODEL_NAME, "object": "model", "created": 0, "owned_by": "diffagent"}],
        }

    @app.post("/v1/chat/completions", response_model=None)
    async def completions(
        http: Request,
        request: CompletionRequest,
        x_session_id: str | None = Header(default=None, alias=SESSION_HEADER),
    ) -> JSONResponse | EventSourceResponse:
        """OpenAI-compatible chat: the latest user message is one turn of the session.

        The session comes from the `X-Session-Id` header or the `user` field; without either,
        a new one is started. Its id is returned in the header and as `session_id`. Streaming
        starts with the planner's first token (generate mode, streaming planner) or the end of
        the turn; errors before it are plain HTTP errors, after it a final `error` chunk.
        """
        text = latest_user_text(request.messages)
        session_id = x_session_id or request.user
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        base = {"id": completion_id, "created": int(time.time()), "model": request.model}
        if not request.stream:
            turn = await turns.run(http, session_id, text)
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
                "diffagent": turn.model_dump(mode="json"),
            }
            return JSONResponse(body, headers={SESSION_HEADER: turn.session_id})

        live, sid = turns.start(http, session_id, text, True)
        try:
            first = await first_event(live, http, skip_steps=True)
        except BaseException as error:
            raise turns.error(error, session_id) from error

        def chunk(delta: dict[str, Any], finish: str | None, **more: Any) -> dict[str, str]:
            payload = {
                **base,
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                "session_id": sid,
                **more,
            }
            return {"data": json.dumps(payload)}

        async def events() -> AsyncIterator[dict[str, str]]:
            event, drafting = first, False
            try:
                yield chunk({"role": "assistant", "content": ""}, None)
                while True:
                    if event.kind == "token":
                        opening = "" if drafting else DRAFT_OPEN
                        drafting = True
                        yield chunk({"content": opening + event.data}, None)
                    elif event.kind == "done":
                        turn = turns.response(event.data, sid)
                        if drafting:
                            yield chunk({"content": DRAFT_CLOSE}, None)
                        for piece in chunks(turn.reply):
                            yield chunk({"content": piece}, None)
                        yield chunk({}, "stop", diffagent=turn.model_dump(mode="json"))
                        yield {"data": "[DONE]"}
                        return
                    elif event.kind == "error":
                        yield {"data": json.dumps(turns.error_event(event.data, session_id))}
                        return
                    event = await live.next()
            finally:
                live.cancel.set()  # the client went away (or the turn ended: no effect)

        headers = {SESSION_HEADER: sid} if sid else {}
        return EventSourceResponse(events(), headers=headers, sep="\n")
