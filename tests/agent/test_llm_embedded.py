"""The embedded planner on the real packaged SmolLM2 GGUF: cache, scoring, generation, adapter."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from diffagent.agent import llm_embedded
from diffagent.agent.llm_embedded import (
    EmbeddedBackend,
    default_cache_dir,
    default_threads,
    is_cached,
    json_closed,
)
from diffagent.agent.prompts import generate_json_schema

MESSAGES = [
    {"role": "system", "content": "Name a Stable Diffusion model for the prompt."},
    {"role": "user", "content": "Image prompt: an anime girl with pastel hair"},
]
CONTINUATIONS = [
    "Anime Pastel Dream v1 | SD 1.5 checkpoint | anime, pastel | 512x768",
    "Realistic Vision V5 | SD 1.5 checkpoint | photo | 512x512",
    "x",
    "Juggernaut XL | SDXL checkpoint | cinematic, photo, film grain | 1024x1024",
]


@pytest.fixture(scope="module")
def backend() -> EmbeddedBackend:
    """The embedded backend in float32: converts the packaged GGUF into the test home once."""
    model = EmbeddedBackend(dtype="float32")
    model.load()
    return model


def naive_scores(model: EmbeddedBackend, continuations: list[str]) -> list[float]:
    """Reference p_i: one full forward pass per candidate, no cache sharing, no batching."""
    prefix = model.prompt_ids(MESSAGES)
    scores = []
    for text in continuations:
        cont = model.continuation_ids(text)
        ids = torch.tensor([prefix + cont])
        with torch.inference_mode():
            logprobs = torch.log_softmax(model.model(ids).logits[0].float(), dim=-1)
        picked = [logprobs[len(prefix) - 1 + i, tok].item() for i, tok in enumerate(cont)]
        scores.append(sum(picked) / len(picked))
    return scores


def test_gguf_is_converted_once_into_the_user_data_dir(backend: EmbeddedBackend) -> None:
    folder = default_cache_dir()
    assert is_cached(folder)
    assert (folder / "model.safetensors").is_file()
    assert (folder / "tokenizer.json").is_file()
    assert backend.model.config.model_type == "llama"


def test_second_load_reads_the_cache_not_the_gguf(
    backend: EmbeddedBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_gguf() -> Path:
        raise AssertionError("the GGUF must not be read again")

    monkeypatch.setattr(llm_embedded, "packaged_gguf", no_gguf)
    again = EmbeddedBackend(dtype="float32")
    assert again.score_continuations(MESSAGES, CONTINUATIONS[:2]) == pytest.approx(
        backend.score_continuations(MESSAGES, CONTINUATIONS[:2]), abs=1e-5
    )


def test_shared_prefix_batched_scoring_equals_naive(
    backend: EmbeddedBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(llm_embedded, "_SCORE_BATCH", 3)  # several batches, uneven lengths
    shared = backend.score_continuations(MESSAGES, CONTINUATIONS)
    assert shared == pytest.approx(naive_scores(backend, CONTINUATIONS), abs=1e-4)
    # Scored again with the cached prefix KV: same numbers, and they do differ between candidates.
    assert backend.score_continuations(MESSAGES, CONTINUATIONS) == pytest.approx(shared, abs=1e-5)
    assert max(shared) - min(shared) > 0.1


def test_prefix_sharing_a_system_prompt_with_the_last_one_scores_the_same(
    backend: EmbeddedBackend,
) -> None:
    other = [MESSAGES[0], {"role": "user", "content": "Image prompt: a red sports car at night"}]
    backend.score_continuations(MESSAGES, CONTINUATIONS[:1])  # leaves MESSAGES' state cached
    reused = backend.score_continuations(other, CONTINUATIONS)  # runs only the differing tail
    backend._prefix = None
    fresh = backend.score_continuations(other, CONTINUATIONS)
    assert reused == pytest.approx(fresh, abs=1e-4)
    shorter = [MESSAGES[0], {"role": "user", "content": "Image prompt: a red"}]
    backend.score_continuations(shorter, CONTINUATIONS[:1])  # a strict prefix of the last one
    cut = backend.score_continuations(shorter, CONTINUATIONS)
    backend._prefix = None
    assert cut == pytest.approx(backend.score_continuations(shorter, CONTINUATIONS), abs=1e-4)


def test_bfloat16_scores_stay_close_to_float32(backend: EmbeddedBackend) -> None:
    fast = EmbeddedBackend(dtype="bfloat16")
    shared = fast.score_continuations(MESSAGES, CONTINUATIONS)
    assert fast.model.dtype == torch.bfloat16
    assert shared == pytest.approx(naive_scores(fast, CONTINUATIONS), abs=0.1)
    assert shared == pytest.approx(backend.score_continuations(MESSAGES, CONTINUATIONS), abs=0.2)


def test_empty_continuation_is_rejected(backend: EmbeddedBackend) -> None:
    with pytest.raises(ValueError, match="empty"):
        backend.score_continuations(MESSAGES, ["fine", ""])


def test_complete_is_greedy_and_json_primed(backend: EmbeddedBackend) -> None:
    text = backend.complete(MESSAGES, max_new_tokens=12)
    assert text.strip()
    assert backend.complete(MESSAGES, max_new_tokens=12) == text
    primed = backend.complete(MESSAGES, json_schema=generate_json_schema(), max_new_tokens=40)
    assert primed.startswith('{"model":')
    # Generation stops as soon as the object closes (or at the token limit).
    closed_at = next((i for i in range(1, len(primed) + 1) if json_closed(primed[:i])), None)
    assert closed_at is None or primed[closed_at:].strip() == ""


def test_json_closed_respects_strings() -> None:
    assert json_closed('{"a": "}"}')
    assert not json_closed('{"a": "}')
    assert not json_closed('{"a": {"b": 1}')
    assert json_closed('{"a": "\\"}"}')


def test_peft_adapter_is_applied(backend: EmbeddedBackend, tmp_path: Path) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(default_cache_dir())
    torch.manual_seed(0)
    config = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    tuned = get_peft_model(base, config)
    tuned.save_pretrained(tmp_path / "adapter")

    adapted = EmbeddedBackend(adapter_path=tmp_path / "adapter", dtype="float32")
    with_adapter = adapted.score_continuations(MESSAGES, CONTINUATIONS)
    without = backend.score_continuations(MESSAGES, CONTINUATIONS)
    assert max(abs(a - b) for a, b in zip(with_adapter, without, strict=True)) > 1e-3
    ids = torch.tensor([adapted.prompt_ids(MESSAGES)])
    with torch.inference_mode():
        expected = tuned.eval()(ids).logits
        got = adapted.model(ids).logits
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    # Merged into the base weights for inference: no LoRA layer is left to run.
    assert not any("lora" in name for name, _ in adapted.model.named_modules())


def test_default_threads_leave_busy_cores_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(8)))
    monkeypatch.setattr(os, "getloadavg", lambda: (0.4, 0.0, 0.0))
    assert default_threads() == 4  # at most 4: a 135M model gains little beyond
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 1})
    assert default_threads() == 2
    monkeypatch.setattr(os, "getloadavg", lambda: (1.2, 0.0, 0.0))
    assert default_threads() == 1
    monkeypatch.setattr(os, "getloadavg", lambda: (7.9, 0.0, 0.0))
    assert default_threads() == 1


def test_missing_adapter_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="adapter"):
        EmbeddedBackend(adapter_path=tmp_path / "nope")


def test_json_schema_is_enforced_by_the_grammar(backend: EmbeddedBackend) -> None:
    from diffagent.agent.prompts import generate_messages
    from diffagent.samplers import CANONICAL_SAMPLERS

    from ..fakes import make_card

    assert backend.grammar  # xgrammar is a dependency
    schema = generate_json_schema()
    messages = generate_messages("a red fox in the snow", "", [make_card(7, "Fox Mix")])
    reply = json.loads(backend.complete(messages, json_schema=schema, max_new_tokens=128))
    assert list(reply) == schema["required"]  # required keys only, in order
    assert reply["type"] in ("Checkpoint", "LORA") and reply["base_model"] in ("SD 1.5", "SDXL 1.0")
    assert reply["sampling_method"] in CANONICAL_SAMPLERS
    assert 1 <= reply["sampling_steps"] <= 150 and 1 <= reply["cfg_scale"] <= 30
