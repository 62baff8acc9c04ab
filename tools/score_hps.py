"""Human Preference Score v2 / v2.1 (Wu et al. 2023): official checkpoints on open_clip ViT-H-14.

The score is what the `hpsv2` package returns: the cosine between the normalised image and text
features (the paper's Eq. 3 without the temperature; tables print it x100). Preprocessing
replicates hpsv2's validation transform exactly: tensor first, resize the longest side to 224
(bicubic), pad to a square with black, then normalise.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
import torchvision.transforms.functional as F
from PIL import Image
from torchvision import transforms

from diffagent.tools.score_clip import load_open_clip, open_clip_cosines

HPS_URLS = {
    "v2.0": "https://huggingface.co/xswu/HPSv2/resolve/main/HPS_v2_compressed.pt",
    "v2.1": "https://huggingface.co/xswu/HPSv2/resolve/main/HPS_v2.1_compressed.pt",
}
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)

logger = logging.getLogger(__name__)


class ResizeLongestAndPad:
    """hpsv2's ResizeMaxSize: scale the longest side to `size` and pad the rest with `fill`."""

    def __init__(self, size: int, fill: float = 0.0) -> None:
        self.size = size
        self.fill = fill

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        """Resize and pad a (C, H, W) tensor."""
        height, width = image.shape[1:]
        scale = self.size / float(max(height, width))
        new_size = [round(dim * scale) for dim in (height, width)]
        if scale != 1.0:
            image = F.resize(image, new_size, transforms.InterpolationMode.BICUBIC)
        # hpsv2 skips the padding too when scale == 1 and then fails on a non-square image
        # (e.g. 224 x 160); padding it is the only way such an image can be scored.
        pad_h = self.size - new_size[0]
        pad_w = self.size - new_size[1]
        padding = [pad_w // 2, pad_h // 2, pad_w - pad_w // 2, pad_h - pad_h // 2]
        return F.pad(image, padding=padding, fill=self.fill)


def hps_preprocess(image_size: int) -> transforms.Compose:
    """hpsv2 1.2's `preprocess_val` (light_augmentation=True) for RGB images."""
    return transforms.Compose(
        [
            transforms.Lambda(lambda image: image.convert("RGB")),
            transforms.ToTensor(),
            ResizeLongestAndPad(image_size),
            transforms.Normalize(OPENAI_MEAN, OPENAI_STD),
        ]
    )


class HpsScorer:
    """HPS v2 / v2.1 of (prompt, images): cosine of open_clip ViT-H-14 features, about 0.2-0.35."""

    name = "hps"

    def __init__(
        self,
        checkpoint: Path | None,
        *,
        version: Literal["v2.0", "v2.1"] = "v2.1",
        arch: str = "ViT-H-14",
        device: str = "cpu",
    ) -> None:
        if checkpoint is None or not checkpoint.is_file():
            where = f"not found at {checkpoint}" if checkpoint is not None else "not configured"
            raise FileNotFoundError(
                f"HPS {version} weights {where}: download {HPS_URLS[version]} and pass --hps "
                "or set DIFFAGENT_HPS_WEIGHTS"
            )
        self.checkpoint = checkpoint
        self.version = version
        self.arch = arch
        self.device = device
        self.convention = (
            f"HPS {version}: cos(E_txt, E_img) of open_clip {arch}, as hpsv2.score (no x100)"
        )
        self._loaded: tuple[Any, Any, Any] | None = None

    def _load(self) -> tuple[Any, Any, Any]:
        if self._loaded is None:
            logger.info("loading HPS %s from %s", self.version, self.checkpoint)
            model, _, tokenizer = load_open_clip(self.arch, self.checkpoint, self.device)
            size = model.visual.image_size
            self._loaded = (
                model,
                hps_preprocess(size[0] if isinstance(size, tuple) else size),
                tokenizer,
            )
        return self._loaded

    def score(self, prompt: str, images: Sequence[Image.Image]) -> list[float]:
        """HPS of each image for the prompt: the cosine of the HPS-tuned CLIP's embeddings."""
        if not images:
            return []
        return open_clip_cosines(self._load(), prompt, images, self.device)
