"""Diffusers -> original ldm/A1111 single-file key layout (the inverse of diffusers' loader).

Used to write tiny random checkpoints in the layout Civitai files have, so the real
`from_single_file` path is exercised. Round-trip tested against diffusers' own converters.
"""

from __future__ import annotations

from typing import Any

import torch

_RESNET = (
    ("norm1", "in_layers.0"),
    ("conv1", "in_layers.2"),
    ("time_emb_proj", "emb_layers.1"),
    ("norm2", "out_layers.0"),
    ("conv2", "out_layers.3"),
    ("conv_shortcut", "skip_connection"),
)
_UNET_TOP = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "add_embedding.linear_1": "label_emb.0.0",
    "add_embedding.linear_2": "label_emb.0.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}
_VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _resnet_tail(tail: str) -> str:
    for new, old in _RESNET:
        if tail.startswith(new + "."):
            return old + tail[len(new) :]
    return tail


def _unet_key(key: str, config: dict[str, Any]) -> str:
    per_block = int(config["layers_per_block"])
    parts = key.split(".")
    head = ".".join(parts[:-1])
    if head in _UNET_TOP:
        return f"{_UNET_TOP[head]}.{parts[-1]}"
    if parts[0] == "down_blocks":
        block, kind = int(parts[1]), parts[2]
        if kind == "downsamplers":
            return f"input_blocks.{(block + 1) * (per_block + 1)}.0.op." + ".".join(parts[5:])
        index = 1 + block * (per_block + 1) + int(parts[3])
        rest = ".".join(parts[4:])
        if kind == "resnets":
            return f"input_blocks.{index}.0.{_resnet_tail(rest)}"
        return f"input_blocks.{index}.1.{rest}"
    if parts[0] == "up_blocks":
        block, kind = int(parts[1]), parts[2]
        up_types = config["up_block_types"]
        if kind == "upsamplers":
            slot = 2 if "CrossAttn" in up_types[block] else 1
            index = block * (per_block + 1) + per_block
            return f"output_blocks.{index}.{slot}." + ".".join(parts[4:])
        index = block * (per_block + 1) + int(parts[3])
        rest = ".".join(parts[4:])
        if kind == "resnets":
            return f"output_blocks.{index}.0.{_resnet_tail(rest)}"
        return f"output_blocks.{index}.1.{rest}"
    if parts[0] == "mid_block":
        rest = ".".join(parts[3:])
        if parts[1] == "resnets":
            return f"middle_block.{2 * int(parts[2])}.{_resnet_tail(rest)}"
        return f"middle_block.1.{rest}"
    raise ValueError(f"no ldm name for UNet key {key!r}")


def unet_module_to_ldm(name: str, config: dict[str, Any]) -> str:
    """The ldm (sgm) name of a diffusers UNet module, e.g. for kohya SDXL LoRA keys."""
    return _unet_key(name + ".weight", config).removesuffix(".weight")


def unet_to_ldm(state: dict[str, torch.Tensor], config: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Rename a diffusers UNet2DConditionModel state dict to `model.diffusion_model.*` keys."""
    return {"model.diffusion_model." + _unet_key(k, config): v for k, v in state.items()}


def _vae_key(key: str, n_blocks: int) -> str:
    parts = key.split(".")
    side = parts[0]
    if parts[1] == "down_blocks":
        block, kind = parts[2], parts[3]
        if kind == "downsamplers":
            return f"{side}.down.{block}.downsample." + ".".join(parts[5:])
        return f"{side}.down.{block}.block.{parts[4]}." + _vae_tail(".".join(parts[5:]))
    if parts[1] == "up_blocks":
        up, kind = n_blocks - 1 - int(parts[2]), parts[3]  # ldm numbers up blocks in reverse
        if kind == "upsamplers":
            return f"{side}.up.{up}.upsample." + ".".join(parts[5:])
        return f"{side}.up.{up}.block.{parts[4]}." + _vae_tail(".".join(parts[5:]))
    if parts[1] == "mid_block":
        if parts[2] == "resnets":
            return f"{side}.mid.block_{int(parts[3]) + 1}." + _vae_tail(".".join(parts[4:]))
        rest = ".".join(parts[4:])
        for new, old in _VAE_ATTN.items():
            if rest.startswith(new + "."):
                return f"{side}.mid.attn_1.{old}" + rest[len(new) :]
    if parts[1] == "conv_norm_out":
        return f"{side}.norm_out.{parts[2]}"
    return key


def _vae_tail(tail: str) -> str:
    return tail.replace("conv_shortcut", "nin_shortcut")


def vae_to_ldm(state: dict[str, torch.Tensor], config: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Rename a diffusers AutoencoderKL state dict to `first_stage_model.*` keys."""
    n_blocks = len(config["block_out_channels"])
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        new = _vae_key(key, n_blocks)
        if ".mid.attn_1." in new and new.endswith(".weight") and value.ndim == 2:
            value = value.reshape(*value.shape, 1, 1)  # ldm stores attention as 1x1 convs
        out["first_stage_model." + new] = value
    return out


def _with_text_model(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # transformers >= 5.6 flattened CLIPTextModel (no `text_model.` prefix); ldm files keep it.
    out = {}
    for key, value in state.items():
        if key.startswith(("text_model.", "text_projection.")):
            out[key] = value
        else:
            out["text_model." + key] = value
    return out


def clip_to_ldm(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Prefix an OpenAI-CLIP (transformers) text encoder the way ldm files store it."""
    state = _with_text_model(state)
    return {prefix + k: v for k, v in state.items() if "position_ids" not in k}


def open_clip_to_ldm(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Convert a CLIPTextModelWithProjection state dict to open_clip's text-tower layout."""
    state = _with_text_model(state)
    out: dict[str, torch.Tensor] = {}
    qkv: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        if "position_ids" in key:
            continue
        if key == "text_projection.weight":
            out[prefix + "text_projection"] = value.T.contiguous()
            continue
        if key.startswith("text_model.embeddings."):
            name = key.removeprefix("text_model.embeddings.")
            target = {
                "token_embedding.weight": "token_embedding.weight",
                "position_embedding.weight": "positional_embedding",
            }[name]
            out[prefix + target] = value
            continue
        if key.startswith("text_model.final_layer_norm."):
            out[prefix + "ln_final." + key.rsplit(".", 1)[1]] = value
            continue
        layer = key.removeprefix("text_model.encoder.layers.")
        index, rest = layer.split(".", 1)
        base = f"{prefix}transformer.resblocks.{index}."
        if rest.startswith("self_attn.") and rest.split(".")[1] in ("q_proj", "k_proj", "v_proj"):
            _, proj, kind = rest.split(".")
            qkv.setdefault(f"{base}attn.in_proj_{kind}", {})[proj[0]] = value
            continue
        rest = (
            rest.replace("self_attn.", "attn.")
            .replace("layer_norm1", "ln_1")
            .replace("layer_norm2", "ln_2")
            .replace("fc1", "c_fc")
            .replace("fc2", "c_proj")
        )
        out[base + rest] = value
    for key, parts in qkv.items():
        out[key] = torch.cat([parts["q"], parts["k"], parts["v"]])
    return out
