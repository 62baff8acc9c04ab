"""Tiny random-weight scorer checkpoints in their official file formats, for offline tests.

Values are drawn from a seeded generator in sorted key order, so the same seed always gives the
same files (the equivalence fixtures in tests/tools/fixtures/scoring_reference/ rely on this).
Only torch and open_clip are imported here (no transformers), so the throwaway reference
environment with an old transformers can import this module too.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

# Tiny ImageReward architecture (the real one is BLIP ViT-L/16 + a 12-layer BERT of width 768).
# The vision width is a multiple of 64 because the loader infers heads as width // 64, as in ViT-L.
TINY_IR_VISION_WIDTH = 128
TINY_IR_VISION_DEPTH = 2
TINY_IR_PATCH = 16
TINY_IR_IMAGE = 224
TINY_IR_TEXT_WIDTH = 64
TINY_IR_TEXT_HEADS = 2
TINY_IR_TEXT_LAYERS = 2
TINY_IR_TEXT_INTERMEDIATE = 128
IR_VOCAB_SIZE = 30524  # bert-base-uncased (30522) + [DEC] + [ENC], as ImageReward's med_config
IR_MLP_WIDTHS = (1024, 128, 64, 16, 1)

# Tiny open_clip configs (same families as ViT-B-32-quickgelu and ViT-H-14, the real vocabulary).
TINY_CLIP_CONFIG: dict[str, object] = {
    "embed_dim": 32,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 224, "layers": 2, "width": 64, "patch_size": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
TINY_HPS_CONFIG: dict[str, object] = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 224, "layers": 2, "width": 64, "head_width": 32, "patch_size": 14},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
TINY_CLIP_ARCH = "diffagent-tiny-clip"
TINY_HPS_ARCH = "diffagent-tiny-hps"


def tiny_med_config() -> dict[str, object]:
    """The tiny BLIP text-encoder config, in the format of ImageReward's `med_config.json`."""
    return {
        "architectures": ["BertModel"],
        "attention_probs_dropout_prob": 0.1,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "hidden_size": TINY_IR_TEXT_WIDTH,
        "initializer_range": 0.02,
        "intermediate_size": TINY_IR_TEXT_INTERMEDIATE,
        "layer_norm_eps": 1e-12,
        "max_position_embeddings": 512,
        "model_type": "bert",
        "num_attention_heads": TINY_IR_TEXT_HEADS,
        "num_hidden_layers": TINY_IR_TEXT_LAYERS,
        "pad_token_id": 0,
        "type_vocab_size": 2,
        "vocab_size": IR_VOCAB_SIZE,
        "encoder_width": TINY_IR_VISION_WIDTH,
        "add_cross_attention": True,
    }


def imagereward_shapes(
    vision_width: int,
    vision_depth: int,
    patch: int,
    image_size: int,
    text_width: int,
    text_layers: int,
    intermediate: int,
    vocab_size: int = IR_VOCAB_SIZE,
    max_positions: int = 512,
) -> dict[str, tuple[int, ...]]:
    """Key -> shape of an official ImageReward.pt state dict for the given architecture."""
    shapes: dict[str, tuple[int, ...]] = {}
    v, t = "blip.visual_encoder.", "blip.text_encoder."
    n_tokens = (image_size // patch) ** 2 + 1
    shapes[v + "cls_token"] = (1, 1, vision_width)
    shapes[v + "pos_embed"] = (1, n_tokens, vision_width)
    shapes[v + "patch_embed.proj.weight"] = (vision_width, 3, patch, patch)
    shapes[v + "patch_embed.proj.bias"] = (vision_width,)
    for i in range(vision_depth):
        b = f"{v}blocks.{i}."
        for norm in ("norm1", "norm2"):
            shapes[b + norm + ".weight"] = (vision_width,)
            shapes[b + norm + ".bias"] = (vision_width,)
        shapes[b + "attn.qkv.weight"] = (3 * vision_width, vision_width)
        shapes[b + "attn.qkv.bias"] = (3 * vision_width,)
        shapes[b + "attn.proj.weight"] = (vision_width, vision_width)
        shapes[b + "attn.proj.bias"] = (vision_width,)
        shapes[b + "mlp.fc1.weight"] = (4 * vision_width, vision_width)
        shapes[b + "mlp.fc1.bias"] = (4 * vision_width,)
        shapes[b + "mlp.fc2.weight"] = (vision_width, 4 * vision_width)
        shapes[b + "mlp.fc2.bias"] = (vision_width,)
    shapes[v + "norm.weight"] = (vision_width,)
    shapes[v + "norm.bias"] = (vision_width,)
    shapes[t + "embeddings.position_ids"] = (1, max_positions)
    shapes[t + "embeddings.word_embeddings.weight"] = (vocab_size, text_width)
    shapes[t + "embeddings.position_embeddings.weight"] = (max_positions, text_width)
    shapes[t + "embeddings.LayerNorm.weight"] = (text_width,)
    shapes[t + "embeddings.LayerNorm.bias"] = (text_width,)
    for i in range(text_layers):
        b = f"{t}encoder.layer.{i}."
        for part, kv_width in (("attention", text_width), ("crossattention", vision_width)):
            shapes[f"{b}{part}.self.query.weight"] = (text_width, text_width)
            shapes[f"{b}{part}.self.query.bias"] = (text_width,)
            for name in ("key", "value"):
                shapes[f"{b}{part}.self.{name}.weight"] = (text_width, kv_width)
                shapes[f"{b}{part}.self.{name}.bias"] = (text_width,)
            shapes[f"{b}{part}.output.dense.weight"] = (text_width, text_width)
            shapes[f"{b}{part}.output.dense.bias"] = (text_width,)
            shapes[f"{b}{part}.output.LayerNorm.weight"] = (text_width,)
            shapes[f"{b}{part}.output.LayerNorm.bias"] = (text_width,)
        shapes[b + "intermediate.dense.weight"] = (intermediate, text_width)
        shapes[b + "intermediate.dense.bias"] = (intermediate,)
        shapes[b + "output.dense.weight"] = (text_width, intermediate)
        shapes[b + "output.dense.bias"] = (text_width,)
        shapes[b + "output.LayerNorm.weight"] = (text_width,)
        shapes[b + "output.LayerNorm.bias"] = (text_width,)
    shapes["blip.vision_proj.weight"] = (256, vision_width)
    shapes["blip.vision_proj.bias"] = (256,)
    shapes["blip.text_proj.weight"] = (256, text_width)
    shapes["blip.text_proj.bias"] = (256,)
    widths = (text_width, *IR_MLP_WIDTHS)
    for index, (fan_in, fan_out) in zip(
        (0, 2, 4, 6, 7), zip(widths, widths[1:], strict=False), strict=True
    ):
        shapes[f"mlp.layers.{index}.weight"] = (fan_out, fan_in)
        shapes[f"mlp.layers.{index}.bias"] = (fan_out,)
    return shapes


def _is_norm_weight(key: str) -> bool:
    parts = key.split(".")
    return (
        len(parts) >= 2
        and parts[-1] == "weight"
        and parts[-2].startswith(("norm", "ln_", "LayerNorm"))
    )


def random_state_dict(
    shapes: dict[str, tuple[int, ...]], seed: int, *, int_keys: tuple[str, ...] = ()
) -> dict[str, torch.Tensor]:
    """Fill each shape with seeded random values whose scale keeps activations informative."""
    generator = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for key in sorted(shapes):
        shape = shapes[key]
        if int_keys and key.endswith(int_keys):
            state[key] = torch.arange(shape[-1]).expand(shape).clone()
            continue
        noise = torch.randn(shape, generator=generator, dtype=torch.float32)
        if key == "logit_scale":
            state[key] = torch.full(shape, math.log(1 / 0.07))
        elif _is_norm_weight(key):
            state[key] = 1.0 + 0.1 * noise
        elif len(shape) <= 1:
            state[key] = 0.1 * noise
        else:
            state[key] = noise / math.sqrt(math.prod(shape[1:]))
    return state


def _open_clip_shapes(config_path: Path) -> dict[str, tuple[int, ...]]:
    import open_clip

    open_clip.add_model_config(config_path)
    model = open_clip.create_model(config_path.stem, pretrained=None)
    return {key: tuple(value.shape) for key, value in model.state_dict().items()}


def make_tiny_scorer_weights(out_dir: Path, seed: int = 0) -> dict[str, Path]:
    """Write tiny random CLIP, ImageReward and HPS v2 checkpoints (official formats) to out_dir.

    Returns paths under the keys `clip`, `clip_arch` (open_clip model config JSON),
    `imagereward`, `imagereward_med_config`, `hps` and `hps_arch`.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}

    paths["clip_arch"] = out_dir / f"{TINY_CLIP_ARCH}.json"
    paths["clip_arch"].write_text(json.dumps(TINY_CLIP_CONFIG, indent=2))
    clip_state = random_state_dict(_open_clip_shapes(paths["clip_arch"]), seed)
    paths["clip"] = out_dir / "open_clip_pytorch_model.bin"
    torch.save(clip_state, paths["clip"])

    paths["hps_arch"] = out_dir / f"{TINY_HPS_ARCH}.json"
    paths["hps_arch"].write_text(json.dumps(TINY_HPS_CONFIG, indent=2))
    hps_state = random_state_dict(_open_clip_shapes(paths["hps_arch"]), seed + 1)
    paths["hps"] = out_dir / "HPS_v2_compressed.pt"
    torch.save({"state_dict": hps_state}, paths["hps"])

    shapes = imagereward_shapes(
        TINY_IR_VISION_WIDTH,
        TINY_IR_VISION_DEPTH,
        TINY_IR_PATCH,
        TINY_IR_IMAGE,
        TINY_IR_TEXT_WIDTH,
        TINY_IR_TEXT_LAYERS,
        TINY_IR_TEXT_INTERMEDIATE,
    )
    ir_state = random_state_dict(shapes, seed + 2, int_keys=("position_ids",))
    paths["imagereward"] = out_dir / "ImageReward.pt"
    torch.save(ir_state, paths["imagereward"])
    paths["imagereward_med_config"] = out_dir / "med_config.json"
    paths["imagereward_med_config"].write_text(json.dumps(tiny_med_config(), indent=2))
    return paths
