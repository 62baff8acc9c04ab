"""Canonical A1111 sampler names and a normaliser for the spellings in Civitai metadata."""

from __future__ import annotations

import re

# Canonical AUTOMATIC1111 / Forge sampler names (the names its `/sdapi/v1/samplers` lists).
CANONICAL_SAMPLERS: tuple[str, ...] = (
    "Euler a",
    "Euler",
    "LMS",
    "LMS Karras",
    "Heun",
    "DPM2",
    "DPM2 a",
    "DPM2 Karras",
    "DPM2 a Karras",
    "DPM++ 2S a",
    "DPM++ 2S a Karras",
    "DPM++ 2M",
    "DPM++ 2M Karras",
    "DPM++ SDE",
    "DPM++ SDE Karras",
    "DPM++ 2M SDE",
    "DPM++ 2M SDE Karras",
    "DPM fast",
    "DPM adaptive",
    "DDIM",
    "PLMS",
    "UniPC",
)

DEFAULT_SAMPLER = "Euler a"

# Spellings written by other front ends (k-diffusion names, lowercase variants).
_ALIASES: dict[str, str] = {
    "euler_a": "Euler a",
    "k_euler_a": "Euler a",
    "k_euler": "Euler",
    "k_lms": "LMS",
    "k_heun": "Heun",
    "k_dpm_2": "DPM2",
    "k_dpm_2_a": "DPM2 a",
    "k_dpmpp_2s_a": "DPM++ 2S a",
    "k_dpmpp_2m": "DPM++ 2M",
    "k_dpmpp_sde": "DPM++ SDE",
    "dpmpp_2m": "DPM++ 2M",
    "dpmpp_2m_karras": "DPM++ 2M Karras",
    "dpmpp_sde_karras": "DPM++ SDE Karras",
    "ddim": "DDIM",
    "plms": "PLMS",
    "unipc": "UniPC",
}

_BY_LOWER = {name.lower(): name for name in CANONICAL_SAMPLERS}
# Longest first, so "DPM++ 2M SDE Karras" wins over "DPM++ 2M" as a prefix.
_BY_LENGTH = sorted(CANONICAL_SAMPLERS, key=len, reverse=True)


def normalize_sampler(raw: str | None) -> str | None:
    """Return the canonical A1111 name for a sampler spelling, or None when it cannot be mapped.

    Custom forks append words to a base name ("DPM++ 2M Karras MOD", "DPM++ 2M alt Karras");
    those map to the longest canonical name they start with, keeping "Karras" when present.
    """
    if raw is None:
        return None
    text = re.sub(r"\s+", " ", str(raw)).strip()
    if not text:
        return None
    lower = text.lower()
    if lower in _BY_LOWER:
        return _BY_LOWER[lower]
    if lower in _ALIASES:
        return _ALIASES[lower]
    for name in _BY_LENGTH:
        if lower.startswith(name.lower() + " "):
            rest = lower[len(name) :]
            karras = name + " Karras"
            if "karras" in rest and karras in CANONICAL_SAMPLERS:
                return karras
            return name
    return None


def is_known_sampler(name: str) -> bool:
    """Whether a name is one of the canonical A1111 sampler names."""
    return name in CANONICAL_SAMPLERS
