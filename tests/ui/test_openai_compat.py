"""The OpenAI-compatible endpoint, driven by the `openai` client and LangChain's ChatOpenAI."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest
from langchain_core.messages import HumanMessage
from langchain_openai import ChatOpenAI

from diffagent.ui.server import SESSION_HEADER, create_app

TOKEN = "t0ken"


@pytest.fixture
def url(agent_factory: Callable[[], Any], serve_app: Any) -> Iterator[str]:
    with serve_app(create_app(agent_factory(), token=TOKEN)) as base:
        yield base


def _history(url: str, session_id: str) -> list[str]:
    response = httpx.get(
        f"{url}/v1/sessions/{session_id}/history",
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=30,
    )
    return [m["content"] for m in response.json()["messages"] if m["role"] == "user"]


def test_openai_client_plain_and_streaming_share_a_session(url: str) -> None:
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=TOKEN, max_retries=0)
    assert [model.id for model in client.models.list()] == ["diffagent"]
    first = client.chat.completions.create(
        model="diffagent",
        messages=[
            {"role": "system", "content": "ignored"},
            {"role": "user", "content": "a lighthouse at dusk, oil painting"},
        ],
    )
    session_id = first.model_extra["session_id"]
    assert first.choices[0].message.content
    assert first.choices[0].finish_reason == "stop"
    assert first.model_extra["diffagent"]["api"] is not None

    stream = client.chat.completions.create(
        model="diffagent",
        messages=[
            {"role": "user", "content": "a lighthouse at dusk, oil painting"},
            {"role": "assistant", "content": first.choices[0].message.content},
            {"role": "user", "content": [{"type": "text", "text": "make it square"}]},
        ],
        user=session_id,
        stream=True,
    )
    chunks = list(stream)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks)
    assert len(chunks) >= 3
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert {chunk.model_extra["session_id"] for chunk in chunks} == {session_id}
    # Only the latest user message is a new turn; the server keeps the rest itself.
    assert _history(url, session_id) == ["a lighthouse at dusk, oil painting", "make it square"]
    assert text == chunks[-1].model_extra["diffagent"]["reply"]
    api = chunks[-1].model_extra["diffagent"]["api"]
    assert api["width"] == api["height"]


def test_openai_client_errors(url: str) -> None:
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=TOKEN, max_retries=0)
    with pytest.raises(openai.NotFoundError, match="unknown session_id"):
        client.chat.completions.create(
            model="diffagent", messages=[{"role": "user", "content": "hi"}], user="nope"
        )
    with pytest.raises(openai.NotFoundError, match="unknown session_id"):  # before any chunk
        client.chat.completions.create(
            model="diffagent",
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"X-Session-Id": "nope"},
            stream=True,
        )
    with pytest.raises(openai.UnprocessableEntityError, match="no message with role 'user'"):
        client.chat.completions.create(
            model="diffagent", messages=[{"role": "system", "content": "hi"}]
        )
    with pytest.raises(openai.UnprocessableEntityError, match="empty"):
        client.chat.completions.create(
            model="diffagent", messages=[{"role": "user", "content": ""}]
        )
    stranger = openai.OpenAI(base_url=f"{url}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        stranger.chat.completions.create(
            model="diffagent", messages=[{"role": "user", "content": "hi"}]
        )


def test_langchain_chat_openai_invoke_and_stream(url: str) -> None:
    session_id = httpx.post(
        f"{url}/v1/sessions", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
    ).json()["session_id"]
    llm = ChatOpenAI(
        model="diffagent",
        base_url=f"{url}/v1",
        api_key=TOKEN,  # type: ignore[arg-type]
        max_retries=0,
        default_headers={SESSION_HEADER: session_id},
    )
    answer = llm.invoke([HumanMessage("a samurai cat, anime")])
    assert str(answer.content).strip()
    pieces = list(llm.stream([HumanMessage("more painterly")]))
    streamed = "".join(str(piece.content) for piece in pieces)
    assert len(pieces) >= 3
    history = httpx.get(
        f"{url}/v1/sessions/{session_id}/history",
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=30,
    ).json()["messages"]
    assert [m["content"] for m in history] == [
        "a samurai cat, anime",
        answer.content,
        "more painterly",
        streamed,
    ]
