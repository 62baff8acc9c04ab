"""Tiny random SD 1.5 / SDXL single-file checkpoints and LoRAs, built offline, for tests and demos.

The files use the layouts Civitai downloads have (ldm/A1111 keys for checkpoints, kohya keys for
LoRAs, safetensors), so the real loading path runs on them. The tiny pipeline configs they need sit
beside them, and `model-store.json` tells the store which config folder belongs to which file.
"""

from __future__ import annotations

import json
import re
import shutil
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from diffagent.tools.pipeline_configs import PACKAGED_CONFIGS, complete_config_folder
from diffagent.tools.testing.ldm_layout import (
    clip_to_ldm,
    open_clip_to_ldm,
    unet_module_to_ldm,
    unet_to_ldm,
    vae_to_ldm,
)

_UNET_LORA_TARGET = re.compile(r"attn[12]\.(to_q|to_k|to_v|to_out\.0)$")
TINY_VAE: dict[str, Any] = {
    "_class_name": "AutoencoderKL",
    "act_fn": "silu",
    "block_out_channels": [32, 64, 64],  # 3 blocks: latents are 1/4 of the image side
    "down_block_types": ["DownEncoderBlock2D"] * 3,
    "up_block_types": ["UpDecoderBlock2D"] * 3,
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 1,
    "norm_num_groups": 32,
    "sample_size": 64,
    "scaling_factor": 0.18215,
}
_TINY_UNET: dict[str, Any] = {
    "_class_name": "UNet2DConditionModel",
    "block_out_channels": [32, 64],
    "layers_per_block": 2,
    "sample_size": 32,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"],
    "attention_head_dim": [2, 4],
    "norm_num_groups": 32,
}
TINY_UNET: dict[str, dict[str, Any]] = {
    "sd15": {**_TINY_UNET, "cross_attention_dim": 32},
    "sdxl": {
        **_TINY_UNET,
        "cross_attention_dim": 80,  # text_encoder (32) + text_encoder_2 (48) hidden states
        "use_linear_projection": True,
        "addition_embed_type": "text_time",
        "addition_time_embed_dim": 8,
        "transformer_layers_per_block": [1, 2],
        "projection_class_embeddings_input_dim": 80,  # pooled (32) + 6 time ids x 8
    },
}


def _clip_config(hidden: int, projection: int, model_class: str) -> dict[str, Any]:
    return {
        "architectures": [model_class],
        "model_type": "clip_text_model",
        "hidden_size": hidden,
        "intermediate_size": 37,
        "num_attention_heads": 4,
        "num_hidden_layers": 5,
        "projection_dim": projection,
        "max_position_embeddings": 77,
        "vocab_size": 49408,
        "hidden_act": "gelu",
        "layer_norm_eps": 1e-05,
        "bos_token_id": 0,
        "eos_token_id": 2,
        "pad_token_id": 1,
    }


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def write_tiny_config(kind: str, folder: Path) -> Path:
    """Write the tiny pipeline config folder for 'sd15' or 'sdxl' (packaged layout, tiny sizes)."""
    source = Path(str(resources.files("diffagent.tools") / "configs" / kind))
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(source, folder)
    _write_json(folder / "unet" / "config.json", TINY_UNET[kind])
    _write_json(folder / "vae" / "config.json", TINY_VAE)
    _write_json(folder / "text_encoder" / "config.json", _clip_config(32, 32, "CLIPTextModel"))
    if kind == "sdxl":
        config = _clip_config(48, 32, "CLIPTextModelWithProjection")
        _write_json(folder / "text_encoder_2" / "config.json", config)
    return complete_config_folder(folder)


def _build_checkpoint(kind: str, config_dir: Path) -> dict[str, torch.Tensor]:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    unet_config = UNet2DConditionModel.load_config(config_dir / "unet")
    unet = UNet2DConditionModel.from_config(unet_config)
    vae = AutoencoderKL.from_config(AutoencoderKL.load_config(config_dir / "vae"))
    text = CLIPTextModel(CLIPTextConfig.from_pretrained(config_dir / "text_encoder"))
    state = {
        **unet_to_ldm(unet.state_dict(), dict(unet_config)),
        **vae_to_ldm(vae.state_dict(), dict(vae.config)),
    }
    if kind == "sd15":
        state.update(clip_to_ldm(text.state_dict(), "cond_stage_model.transformer."))
    else:
        text_2 = CLIPTextModelWithProjection(
            CLIPTextConfig.from_pretrained(config_dir / "text_encoder_2")
        )
        state.update(clip_to_ldm(text.state_dict(), "conditioner.embedders.0.transformer."))
        state.update(open_clip_to_ldm(text_2.state_dict(), "conditioner.embedders.1.model."))
    return {key: value.detach().contiguous() for key, value in state.items()}


def _kohya_lora(kind: str, config_dir: Path, rank: int = 4) -> dict[str, torch.Tensor]:
    """Random LoRA in kohya's key layout on the attention projections of UNet and text encoder.

    The tensors are drawn in a fixed order from the global generator (seeded by the caller).
    """
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(config_dir / "unet"))
    text = CLIPTextModel(CLIPTextConfig.from_pretrained(config_dir / "text_encoder"))
    targets: list[tuple[str, torch.nn.Linear]] = []
    for name, module in unet.named_modules():
        if isinstance(module, torch.nn.Linear) and _UNET_LORA_TARGET.search(name):
            # kohya names SD 1.5 UNet modules the diffusers way and SDXL ones the sgm/ldm way.
            if kind == "sdxl":
                name = unet_module_to_ldm(name, dict(unet.config))
            targets.append(("lora_unet_" + name.replace(".", "_"), module))
    te_prefix = "lora_te_" if kind == "sd15" else "lora_te1_"
    for name, module in text.named_modules():
        if isinstance(module, torch.nn.Linear) and "self_attn" in name:
            full = name if name.startswith("text_model.") else "text_model." + name
            targets.append((te_prefix + full.replace(".", "_"), module))
    state: dict[str, torch.Tensor] = {}
    for key, module in targets:
        state[f"{key}.lora_down.weight"] = torch.randn(rank, module.in_features) * 0.5
        state[f"{key}.lora_up.weight"] = torch.randn(module.out_features, rank) * 0.5
        state[f"{key}.alpha"] = torch.tensor(float(rank))
    return state


def write_tiny_lora(kind: str, config_dir: Path, path: Path, seed: int) -> Path:
    """Write one more random kohya-format LoRA for the tiny 'sd15' or 'sdxl' config (`seed`)."""
    from safetensors.torch import save_file

    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        save_file(_kohya_lora(kind, config_dir), str(path))
    finally:
        torch.random.set_rng_state(generator_state)
    return path


def make_tiny_weights(out_dir: Path) -> dict[str, Path]:
    """Write tiny random SD 1.5 and SDXL checkpoints, LoRAs and their configs into `out_dir`.

    Returns paths by name: `sd15`, `sdxl` (checkpoints), `sd15_lora`, `sdxl_lora`,
    `sd15_config`, `sdxl_config` (config folders), `store_config` (model-store.json),
    `cards` (cards.jsonl describing the files, with SHA256) and `sd15_api`, `sdxl_api` (example
    T2I API JSON files).
    """
    from safetensors.torch import save_file

    from diffagent.tools.store import write_store_config

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    paths: dict[str, Path] = {}
    overrides: dict[str, str] = {}
    for kind in PACKAGED_CONFIGS.values():
        config_dir = write_tiny_config(kind, out_dir / "configs" / f"tiny-{kind}")
        checkpoint = out_dir / f"tiny-{kind}.safetensors"
        save_file(_build_checkpoint(kind, config_dir), str(checkpoint))
        lora = out_dir / f"tiny-{kind}-lora.safetensors"
        save_file(_kohya_lora(kind, config_dir), str(lora))
        overrides[checkpoint.name] = config_dir.relative_to(out_dir).as_posix()
        paths[kind] = checkpoint
        paths[f"{kind}_lora"] = lora
        paths[f"{kind}_config"] = config_dir
    paths["store_config"] = write_store_config(out_dir, configs=overrides)
    paths.update(_write_cards_and_apis(out_dir, paths))
    return paths


def _write_cards_and_apis(out_dir: Path, paths: dict[str, Path]) -> dict[str, Path]:
    """Describe the tiny files as catalog cards and write one example T2I API per base model."""
    from diffagent.api import LoraRef, T2IApi
    from diffagent.cards import CardFile, ModelCard, RecommendedParams, write_cards
    from diffagent.tools.store import sha256_file

    cards: list[ModelCard] = []
    written: dict[str, Path] = {}
    for offset, (kind, base, air) in enumerate(
        (("sd15", "SD 1.5", "sd1"), ("sdxl", "SDXL 1.0", "sdxl"))
    ):
        ids = {"Checkpoint": 990_001 + 10 * offset, "LORA": 990_002 + 10 * offset}
        for model_type, key in (("Checkpoint", kind), ("LORA", f"{kind}_lora")):
            file = paths[key]
            version_id = ids[model_type]
            cards.append(
                ModelCard(
                    version_id=version_id,
                    model_id=version_id,
                    air=f"urn:air:{air}:{model_type.lower()}:civitai:{version_id}@{version_id}",
                    name=f"Tiny {base} {model_type}",
                    version_name="v1",
                    type=model_type,  # type: ignore[arg-type]
                    base_model=base,  # type: ignore[arg-type]
                    description="Tiny random weights for offline tests.",
                    file=CardFile(
                        name=file.name,
                        format="SafeTensor",
                        size_kb=file.stat().st_size / 1024,
                        sha256=sha256_file(file).upper(),
                        url=f"file://{file}",
                    ),
                    recommended=RecommendedParams(
                        width=64,
                        height=64,
                        sampling_method="Euler a",
                        sampling_steps=2,
                        cfg_scale=7.0,
                    ),
                )
            )
        api = T2IApi(
            model=f"Tiny {base} Checkpoint",
            type="Checkpoint",
            base_model=base,  # type: ignore[arg-type]
            width=64,
            height=64,
            sampling_method="Euler a",
            sampling_steps=2,
            cfg_scale=7.0,
            model_id=ids["Checkpoint"],
            version_id=ids["Checkpoint"],
            loras=[LoraRef(version_id=ids["LORA"], name=f"Tiny {base} LORA", weight=0.8)],
            prompt="a lighthouse at dusk, oil painting",
            negative_prompt="blurry",
            seed=1,
            clip_skip=2,
        )
        api_path = out_dir / f"tiny-{kind}-api.json"
        api_path.write_text(api.model_dump_json(indent=2) + "\n", encoding="utf-8")
        written[f"{kind}_api"] = api_path
    cards_path = out_dir / "cards.jsonl"
    write_cards(cards, cards_path)
    written["cards"] = cards_path
    return written
