"""Planner backend on any OpenAI-compatible endpoint (vLLM `vllm serve`, `transformers serve`, ...).

`complete` asks for JSON-schema structured output (vLLM guided decoding) and falls back to JSON
mode, then to plain text, when the server rejects it; while someone listens
(`diffagent.agent.streaming.token_sink`) it streams and passes the text on as it arrives.
`score_continuations` uses `/v1/completions` with `echo` and `logprobs` (vLLM supports it); a
server that does not return prompt log-probabilities raises `ScoringUnsupportedError`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import openai

from diffagent.agent.streaming import TokenCallback, current_token_sink

# response_format levels tried in order; the first the server accepts is remembered.
_FORMATS = ("json_schema", "json_object", "none")


class ScoringUnsupportedError(NotImplementedError):
    """The endpoint cannot return prompt log-probabilities, so rank mode cannot run on it."""


def chatml(messages: list[dict[str, str]]) -> str:
    """Render messages in ChatML (SmolLM2, Qwen), ending with the assistant header."""
    turns = [f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages]
    return "".join(turns) + "<|im_start|>assistant\n"


class OpenAIBackend:
    """Planner backend speaking the OpenAI protocol to a chat model server."""

    name = "openai"

    def __init__(
        self,
        base_url: str,
        *,
        model: str | None = None,
        api_key: str | None = None,
        temperature: float = 0.0,
        timeout_s: float = 60.0,
        render_prompt: Callable[[list[dict[str, str]]], str] = chatml,
    ) -> None:
        self.base_url = base_url
        self.temperature = temperature
        self.render_prompt = render_prompt
        self._model = model
        self._format = 0
        # vLLM and transformers serve accept any key; the client insists on one.
        self.client = openai.OpenAI(
            base_url=base_url, api_key=api_key or "not-needed", timeout=timeout_s, max_retries=1
        )

    @property
    def model(self) -> str:
        """The served model name (the first one the endpoint lists when none was configured)."""
        if self._model is None:
            models = [entry.id for entry in self.client.models.list()]
            if not models:
                raise ValueError(f"the endpoint {self.base_url} lists no models; pass a model name")
            self._model = models[0]
        return self._model

    def complete(
        self,
        messages: list[dict[str, str]],
        *,
        json_schema: dict[str, Any] | None = None,
        max_new_tokens: int = 256,
    ) -> str:
        """The assistant reply; JSON-constrained by the server where it supports it.

        Streamed (`stream=True`) while a token sink is set, each piece passed to it in order.
        """
        while True:
            level = _FORMATS[self._format] if json_schema is not None else "none"
            kwargs: dict[str, Any] = {}
            if level == "json_schema":
                kwargs["response_format"] = {
                    "type": "json_schema",
                    "json_schema": {"name": "t2i_api", "schema": json_schema, "strict": False},
                }
            elif level == "json_object":
                kwargs["response_format"] = {"type": "json_object"}
            sink = current_token_sink()
            request: dict[str, Any] = {
                "model": self.model,
                "messages": messages,
                "max_tokens": max_new_tokens,
                "temperature": self.temperature,
                **kwargs,
            }
            try:
                if sink is not None:
                    create = self.client.chat.completions.with_streaming_response.create
                    with create(stream=True, **request) as streamed:
                        return _read_stream(streamed.iter_lines(), sink)
                response = self.client.chat.completions.create(**request)
            except (openai.BadRequestError, openai.UnprocessableEntityError):
                if level == "none":
                    raise
                self._format += 1  # the server rejects this format: try a weaker one
                continue
            return response.choices[0].message.content or ""

    def score_continuations(
        self, messages: list[dict[str, str]], continuations: list[str]
    ) -> list[float]:
        """Mean token log-probability of each continuation, from echoed prompt log-probs."""
        if not continuations:
            return []
        prefix = self.render_prompt(messages)
        try:
            response = self.client.completions.create(
                model=self.model,
                prompt=[prefix + text for text in continuations],
                max_tokens=1,
                temperature=0.0,
                echo=True,
                logprobs=0,
            )
        except (openai.BadRequestError, openai.NotFoundError, openai.UnprocessableEntityError) as e:
            raise ScoringUnsupportedError(
                f"{self.base_url} cannot score continuations ({e}); use mode 'generate' "
                "or a server with echo+logprobs on /v1/completions (vLLM)"
            ) from e
        choices = sorted(response.choices, key=lambda choice: choice.index)
        if len(choices) != len(continuations):
            raise ScoringUnsupportedError(
                f"{self.base_url} answered {len(choices)} choices for {len(continuations)} prompts"
            )
        return [
            _continuation_score(choice.logprobs, len(prefix), len(prefix + text))
            for choice, text in zip(choices, continuations, strict=True)
        ]


def _read_stream(lines: Iterator[str], sink: TokenCallback) -> str:
    """The text of a streamed chat completion, each piece passed to `sink` as it arrives.

    `lines` are the server-sent event lines; `sink` may cancel the turn (the caller's block
    closes the connection). Chunks are read as plain JSON: building the client's models per
    chunk cost more CPU than the rest of the call.
    """
    parts: list[str] = []
    for line in lines:
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            break
        chunk = json.loads(data)
        if "error" in chunk:
            raise ValueError(f"the planner endpoint sent an error: {chunk['error']}")
        choices = chunk.get("choices") or []
        delta = (choices[0].get("delta") or {}).get("content") if choices else None
        if delta:
            parts.append(delta)
            sink(delta)
    return "".join(parts)


def _continuation_score(logprobs: Any, start: int, end: int) -> float:
    """Mean log-prob of the echoed tokens whose text starts in [start, end)."""
    if logprobs is None or not logprobs.token_logprobs or not logprobs.text_offset:
        raise ScoringUnsupportedError(
            "the endpoint ignored echo/logprobs on /v1/completions; rank mode needs them "
            "(vLLM returns them); use mode 'generate' with this server"
        )
    values = [
        value
        for value, offset in zip(logprobs.token_logprobs, logprobs.text_offset, strict=False)
        if start <= offset < end and value is not None
    ]
    if not values:
        raise ScoringUnsupportedError("the endpoint returned no log-probs for the continuation")
    return float(sum(values) / len(values))
