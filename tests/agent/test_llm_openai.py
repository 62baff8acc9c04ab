"""The OpenAI-compatible planner backend: protocol handling, then a real `transformers serve`."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from diffagent.agent.llm_embedded import ensure_cached
from diffagent.agent.llm_openai import OpenAIBackend, ScoringUnsupportedError, chatml
from diffagent.agent.planner import PlannerConfig, make_backend, plan_generate
from diffagent.agent.prompts import generate_json_schema
from diffagent.cards import CardFile, ModelCard, RecommendedParams

MESSAGES = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]


def backend_on(handler: Any) -> OpenAIBackend:
    """A backend whose HTTP goes to `handler` (an in-process fake endpoint for protocol tests)."""
    backend = OpenAIBackend("http://127.0.0.1:1/v1", model="m")
    backend.client = openai.OpenAI(
        base_url="http://127.0.0.1:1/v1",
        api_key="k",
        max_retries=0,
        http_client=httpx.Client(transport=httpx.MockTransport(handler)),
    )
    return backend


def chat_reply(content: str) -> dict[str, Any]:
    return {
        "id": "1",
        "object": "chat.completion",
        "created": 0,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": content},
            }
        ],
    }


def test_json_schema_rejected_falls_back_to_json_mode() -> None:
    seen: list[Any] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append(body.get("response_format", {}).get("type"))
        if seen[-1] == "json_schema":
            return httpx.Response(400, json={"error": {"message": "response_format unsupported"}})
        return httpx.Response(200, json=chat_reply('{"model": "A"}'))

    backend = backend_on(handler)
    assert backend.complete(MESSAGES, json_schema=generate_json_schema()) == '{"model": "A"}'
    backend.complete(MESSAGES, json_schema=generate_json_schema())  # remembers what works
    backend.complete(MESSAGES)  # no schema: no response_format
    assert seen == ["json_schema", "json_object", "json_object", None]


def test_echoed_logprobs_give_the_continuation_mean() -> None:
    prefix = chatml(MESSAGES)

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        assert body["echo"] is True and body["prompt"][0].startswith(prefix)
        choices = []
        for index, text in enumerate(body["prompt"]):
            # Tokens: the prefix as one (None, like a first prompt token), then 2 chars each.
            cut = len(prefix)
            offsets = [0, *range(cut, len(text), 2)]
            values = [None, *[-1.0 - index] * (len(offsets) - 1)]
            choices.append(
                {
                    "index": index,
                    "text": text + "!",
                    "finish_reason": "length",
                    "logprobs": {
                        "tokens": ["t"] * (len(offsets) + 1),
                        "token_logprobs": [*values, -9.0],
                        "text_offset": [*offsets, len(text)],
                        "top_logprobs": None,
                    },
                }
            )
        reply = {"id": "1", "object": "text_completion", "created": 0, "model": "m"}
        return httpx.Response(200, json={**reply, "choices": choices})

    scores = backend_on(handler).score_continuations(MESSAGES, ["abcd", "xy"])
    assert scores == pytest.approx([-1.0, -2.0])  # the generated token (-9) is not counted


def test_server_without_prompt_logprobs_cannot_rank() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        choice = {"index": 0, "text": "x", "finish_reason": "length", "logprobs": None}
        reply = {"id": "1", "object": "text_completion", "created": 0, "model": "m"}
        return httpx.Response(200, json={**reply, "choices": [choice]})

    with pytest.raises(NotImplementedError, match="logprobs"):
        backend_on(handler).score_continuations(MESSAGES, ["a"])


# -- a real OpenAI-compatible server: `transformers serve` on the cached SmolLM2 ---------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def served_model() -> Iterator[tuple[str, str]]:
    """(base_url, model) of `transformers serve` running the cached model folder on loopback."""
    model_dir = ensure_cached()
    port = free_port()
    cli = Path(sys.executable).parent / "transformers"
    command = [str(cli), "serve", "--host", "127.0.0.1", "--port", str(port)]
    # One OpenMP thread: on 2 shared cores more threads spin and run many times slower.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [*command, "--device", "cpu", str(model_dir)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"transformers serve exited: {process.stderr.read()[-2000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(1)
        else:
            raise RuntimeError("transformers serve did not start within 240 s")
        yield f"http://127.0.0.1:{port}/v1", str(model_dir)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


def card(version_id: int, name: str) -> ModelCard:
    return ModelCard(
        version_id=version_id,
        model_id=version_id,
        air=f"urn:air:sd1:checkpoint:civitai:{version_id}@{version_id}",
        name=name,
        type="Checkpoint",
        base_model="SD 1.5",
        tags=["anime"],
        description=f"{name} model",
        file=CardFile(name="m.safetensors", format="SafeTensor", sha256="AB" * 32, url="u"),
        recommended=RecommendedParams(
            width=512, height=768, sampling_method="Euler a", sampling_steps=20, cfg_scale=7
        ),
    )


@pytest.mark.slow  # measured here: 90-150 s (server start plus the first answers on 2 cores)
def test_real_server_chat_generate_and_rank_support(served_model: tuple[str, str]) -> None:
    base_url, model_dir = served_model
    backend = make_backend(PlannerConfig(backend="openai", base_url=base_url, timeout_s=300))
    assert isinstance(backend, OpenAIBackend)
    assert backend.model == model_dir  # the first model the endpoint lists

    text = backend.complete([{"role": "user", "content": "Say hello."}], max_new_tokens=8)
    assert isinstance(text, str) and text.strip()
    cards = [card(1, "Anime A"), card(2, "Anime B")]
    result = plan_generate(backend, "an anime girl", "", cards, max_new_tokens=48)
    assert result.raw_text.strip()
    assert (result.api is None) == (result.error is not None)
    # transformers serve ignores echo/logprobs: rank mode must say so, not return garbage.
    with pytest.raises(ScoringUnsupportedError):
        backend.score_continuations([{"role": "user", "content": "hi"}], ["a", "b"])
