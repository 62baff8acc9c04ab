"""A1111 prompt syntax: parsing, and embeddings equal to diffusers' where the syntax is absent."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from diffagent.tools.prompt_embeds import encode_prompts, parse_attention, strip_extra_networks
from diffagent.tools.testing.tiny import write_tiny_config


def test_parse_attention_weights() -> None:
    runs = dict(parse_attention("a (red:1.5) car, ((big)), [small], \\(literal\\)"))
    assert runs["red"] == 1.5
    assert runs["big"] == pytest.approx(1.21)
    assert runs["small"] == pytest.approx(1 / 1.1)
    assert runs[", (literal)"] == 1.0  # escaped brackets are text
    assert parse_attention("plain text") == [("plain text", 1.0)]


def test_parse_attention_break_nesting_and_unclosed() -> None:
    runs = parse_attention("sky BREAK (sea, [(boat:2)]) (open")
    assert ("BREAK", -1.0) in runs
    weights = dict(runs)
    assert weights["boat"] == pytest.approx(2 / 1.1 * 1.1)
    assert weights["open"] == pytest.approx(1.1)  # unclosed: applies to the rest
    assert weights["sea, "] == pytest.approx(1.1)
    assert parse_attention("a) b] c:") == [("a) b] c:", 1.0)]  # stray closers are text


def test_extra_network_tags_are_removed() -> None:
    assert strip_extra_networks("castle <lora:detail:0.8>, dusk <LyCO:x:1>") == "castle , dusk"


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module", params=["sd15", "sdxl"])
def pipe(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """A random tiny pipeline built from the tiny config (no checkpoint file needed)."""
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionPipeline,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import (
        CLIPTextConfig,
        CLIPTextModel,
        CLIPTextModelWithProjection,
        CLIPTokenizer,
    )

    kind = request.param
    folder: Path = write_tiny_config(kind, tmp_path_factory.mktemp(f"cfg-{kind}"))
    torch.manual_seed(0)
    parts = {
        "unet": UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / "unet")),
        "vae": AutoencoderKL.from_config(AutoencoderKL.load_config(folder / "vae")),
        "scheduler": EulerDiscreteScheduler(steps_offset=1),
        "tokenizer": CLIPTokenizer.from_pretrained(folder / "tokenizer"),
        "text_encoder": CLIPTextModel(CLIPTextConfig.from_pretrained(folder / "text_encoder")),
    }
    if kind == "sd15":
        return StableDiffusionPipeline(**parts, safety_checker=None, feature_extractor=None)
    config_2 = CLIPTextConfig.from_pretrained(folder / "text_encoder_2")
    parts["text_encoder_2"] = CLIPTextModelWithProjection(config_2)
    parts["tokenizer_2"] = CLIPTokenizer.from_pretrained(folder / "tokenizer_2")
    return StableDiffusionXLPipeline(**parts)


def _diffusers(pipe, prompt: str, negative: str | None, clip_skip: int | None) -> list:
    if hasattr(pipe, "text_encoder_2"):
        return list(
            pipe.encode_prompt(prompt, device="cpu", negative_prompt=negative, clip_skip=clip_skip)
        )
    return list(pipe.encode_prompt(prompt, "cpu", 1, True, negative, clip_skip=clip_skip))


@torch.inference_mode()
@pytest.mark.parametrize("negative", ["blurry, lowres", ""])
def test_plain_prompts_equal_diffusers(pipe, negative: str) -> None:
    ours = encode_prompts(pipe, "a lighthouse at dusk, oil painting", negative, None)
    theirs = _diffusers(pipe, "a lighthouse at dusk, oil painting", negative or None, None)
    names = ["prompt_embeds", "negative_prompt_embeds"]
    if hasattr(pipe, "text_encoder_2"):
        names += ["pooled_prompt_embeds", "negative_pooled_prompt_embeds"]
    for name, reference in zip(names, theirs, strict=True):
        assert torch.allclose(ours[name], reference, atol=1e-6), name


@torch.inference_mode()
def test_clip_skip_takes_an_earlier_layer(pipe) -> None:
    skipped = encode_prompts(pipe, "a lighthouse", "", 1)["prompt_embeds"]
    if hasattr(pipe, "text_encoder_2"):
        reference = _diffusers(pipe, "a lighthouse", None, 1)[0]
        assert torch.allclose(skipped, reference, atol=1e-6)
    assert not torch.allclose(
        skipped, encode_prompts(pipe, "a lighthouse", "", None)["prompt_embeds"]
    )


@torch.inference_mode()
def test_weights_long_prompts_and_break(pipe) -> None:
    plain = encode_prompts(pipe, "a red car", "", None)["prompt_embeds"]
    weighted = encode_prompts(pipe, "a (red:1.5) car", "", None)["prompt_embeds"]
    assert weighted.shape == plain.shape and not torch.allclose(weighted, plain)
    assert torch.allclose(weighted.mean(), plain.mean(), atol=1e-5)  # A1111 restores the mean
    long = ", ".join(["a red car"] * 40)  # about 160 tokens: three windows
    out = encode_prompts(pipe, long, "blurry", None)
    assert out["prompt_embeds"].shape[1] == 3 * 77
    assert out["negative_prompt_embeds"].shape == out["prompt_embeds"].shape
    broken = encode_prompts(pipe, "a red car BREAK a blue sky", "", None)["prompt_embeds"]
    assert broken.shape[1] == 2 * 77
    tagged = encode_prompts(pipe, "a red car <lora:detail:0.8>", "", None)["prompt_embeds"]
    assert torch.equal(tagged, plain)
