"""The packaged SD 1.5 / SDXL configs describe the real architectures, and load fully offline."""

from __future__ import annotations

import json

import open_clip
import pytest
from accelerate import init_empty_weights
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from diffagent.tools.pipeline_configs import packaged_config_dir

# Parameter counts of the released models (the diffusers model cards / checkpoints).
REAL_PARAMS = {
    ("SD 1.5", "unet"): 859_520_964,
    ("SDXL 1.0", "unet"): 2_567_463_684,
    ("SD 1.5", "vae"): 83_653_863,
    ("SD 1.5", "text_encoder"): 123_060_480,
    ("SDXL 1.0", "text_encoder_2"): 694_659_840,
}


def _count(model) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(("base", "part"), list(REAL_PARAMS))
def test_configs_match_the_released_models(base: str, part: str) -> None:
    folder = packaged_config_dir(base) / part
    with init_empty_weights():
        if part == "unet":
            model = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder))
        elif part == "vae":
            model = AutoencoderKL.from_config(AutoencoderKL.load_config(folder))
        elif part == "text_encoder":
            model = CLIPTextModel(CLIPTextConfig.from_pretrained(folder))
        else:
            model = CLIPTextModelWithProjection(CLIPTextConfig.from_pretrained(folder))
    assert _count(model) == REAL_PARAMS[(base, part)]


@pytest.mark.parametrize("sub", ["tokenizer", "tokenizer_2"])
def test_tokenizer_equals_open_clip(sub: str) -> None:
    folder = packaged_config_dir("SDXL 1.0") / sub
    tokenizer = CLIPTokenizer.from_pretrained(folder, local_files_only=True)
    reference = open_clip.tokenizer.SimpleTokenizer()
    for text in ["a photo of a cat", "masterpiece, best quality, 1girl, (smile:1.2), 8k uhd"]:
        ours = tokenizer(text).input_ids
        assert ours == [49406, *reference.encode(text), 49407]
    assert len(tokenizer) == 49408
    pad = json.loads((folder / "tokenizer_config.json").read_text())["pad_token"]
    assert pad == ("!" if sub == "tokenizer_2" else "<|endoftext|>")
