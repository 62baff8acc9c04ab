"""The embedded planner reads at most `max_user_tokens` tokens of a user message."""

from __future__ import annotations

import pytest

from diffagent.agent.llm_embedded import MAX_USER_TOKENS, EmbeddedBackend


@pytest.fixture(scope="module")
def backend() -> EmbeddedBackend:
    model = EmbeddedBackend(dtype="float32")
    model.load()
    return model


def _prompt(text: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": "Pick a model."}, {"role": "user", "content": text}]


@pytest.mark.parametrize("text", ["😀" * 2000, "a cat, " * 400, "中" * 2000])
def test_long_user_messages_cost_at_most_the_cap(backend: EmbeddedBackend, text: str) -> None:
    empty = len(backend.prompt_ids(_prompt("")))
    ids = backend.prompt_ids(_prompt(text))
    assert len(ids) <= empty + MAX_USER_TOKENS + 2
    assert len(backend.tokenizer(text, add_special_tokens=False)["input_ids"]) > MAX_USER_TOKENS


def test_short_messages_are_untouched(backend: EmbeddedBackend) -> None:
    text = "a cute happy corgi, pixel art 😀"
    template = backend.tokenizer.apply_chat_template(
        _prompt(text), add_generation_prompt=True, tokenize=True
    )
    ids = template["input_ids"] if hasattr(template, "keys") else template
    assert backend.prompt_ids(_prompt(text)) == [int(i) for i in ids]
    cut = backend._capped({"role": "user", "content": "😀" * 2000})["content"]
    assert cut and set(cut) == {"😀"}  # cut on a whole character
