"""CLIP Score as the paper (Eq. 1): 2.5 * max(cos(text, image), 0), CLIP ViT-B/32 on open_clip."""

from __future__ import annotations

import logging
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

CLIP_URL = (
    "https://openaipublic.azureedge.net/clip/models/"
    "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af/ViT-B-32.pt"
    " (or open_clip_pytorch_model.bin from https://huggingface.co/timm/vit_base_patch32_clip_224.openai)"
)
CLIP_WEIGHT = 2.5  # w in Eq. 1, as Hessel et al. (2021)

logger = logging.getLogger(__name__)


def resolve_open_clip_arch(arch: str) -> str:
    """Return an open_clip model name; a path to a model config JSON is registered first."""
    import open_clip

    path = Path(arch)
    if path.suffix == ".json":
        if not path.is_file():
            raise FileNotFoundError(f"open_clip model config not found: {path}")
        open_clip.add_model_config(path)
        return path.stem
    if arch not in open_clip.list_models():
        raise ValueError(
            f"unknown open_clip architecture {arch!r}; "
            "use a name such as ViT-B-32-quickgelu or an open_clip config .json"
        )
    return arch


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("constants.pkl") for name in archive.namelist())


def load_open_clip(arch: str, checkpoint: Path, device: str) -> tuple[Any, Any, Any]:
    """Build an open_clip model from a local checkpoint; return (model, preprocess, tokenizer).

    Accepts open_clip state dicts (.bin/.pt/.safetensors, optionally under `state_dict`) and
    OpenAI's TorchScript archives (ViT-B-32.pt). The load is strict: every key must match.
    """
    import open_clip

    name = resolve_open_clip_arch(arch)
    if _is_torchscript(checkpoint):
        model, _, preprocess = open_clip.create_model_and_transforms(name, device=device)
        state = torch.jit.load(str(checkpoint), map_location="cpu").state_dict()
        for key in ("input_resolution", "context_length", "vocab_size", "attn_mask"):
            state.pop(key, None)
        model.load_state_dict(state, strict=True)
    else:
        model, _, preprocess = open_clip.create_model_and_transforms(
            name, pretrained=str(checkpoint), device=device
        )
    return model.eval(), preprocess, open_clip.get_tokenizer(name)


class ClipScorer:
    """CLIP Score of (prompt, images): 2.5 * max(cos, 0), in [0, 2.5] (Hessel et al. convention)."""

    name = "clip"
    convention = (
        "CLIPScore = 2.5 * max(cos(E_txt, E_img), 0), CLIP ViT-B/32 OpenAI weights, no x100"
    )

    def __init__(
        self, checkpoint: Path | None, *, arch: str = "ViT-B-32-quickgelu", device: str = "cpu"
    ) -> None:
        if checkpoint is None or not checkpoint.is_file():
            where = f"not found at {checkpoint}" if checkpoint is not None else "not configured"
            raise FileNotFoundError(
                f"CLIP ViT-B/32 weights {where}: download {CLIP_URL} and pass --clip "
                "or set DIFFAGENT_CLIP_WEIGHTS"
            )
        self.checkpoint = checkpoint
        self.arch = arch
        self.device = device
        self._loaded: tuple[Any, Any, Any] | None = None

    def _load(self) -> tuple[Any, Any, Any]:
        if self._loaded is None:
            logger.info("loading CLIP %s from %s", self.arch, self.checkpoint)
            self._loaded = load_open_clip(self.arch, self.checkpoint, self.device)
        return self._loaded

    def cosines(self, prompt: str, images: Sequence[Image.Image]) -> list[float]:
        """Cosine similarity between the prompt and each image."""
        if not images:
            return []
        return open_clip_cosines(self._load(), prompt, images, self.device)

    def score(self, prompt: str, images: Sequence[Image.Image]) -> list[float]:
        """CLIP Score of each image for the prompt (paper Eq. 1)."""
        return [CLIP_WEIGHT * max(cos, 0.0) for cos in self.cosines(prompt, images)]


@torch.no_grad()
def open_clip_cosines(
    loaded: tuple[Any, Any, Any], prompt: str, images: Sequence[Image.Image], device: str
) -> list[float]:
    """Cosine between one prompt and each image for a loaded (model, preprocess, tokenizer)."""
    model, preprocess, tokenizer = loaded
    pixels = torch.stack([preprocess(image) for image in images]).to(device)
    text = tokenizer([prompt]).to(device)
    image_features = model.encode_image(pixels, normalize=True)
    text_features = model.encode_text(text, normalize=True)
    return [float(value) for value in (image_features @ text_features.T).squeeze(-1).cpu()]
