"""A1111-style prompt encoding: `(word:1.2)`, `(word)`, `[word]` weights, BREAK, past 77 tokens.

Civitai prompts are written for AUTOMATIC1111, which encodes a prompt in chunks of 75 tokens (each
wrapped in BOS/EOS and encoded separately, then concatenated), scales each token's embedding by its
attention weight and restores the chunk's mean. diffusers alone truncates at 77 tokens and reads the
brackets as text. For a short prompt without weights this gives exactly diffusers' embeddings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

CHUNK = 75  # prompt tokens per CLIP window (77 minus BOS and EOS)
_ROUND, _SQUARE = 1.1, 1 / 1.1
_EXTRA_NETWORK = re.compile(r"<(?:lora|lyco|hypernet):[^>]*>", re.IGNORECASE)
_PIECE = re.compile(
    r"(?P<escaped>\\[\\()\[\]])"
    r"|(?P<open_round>\()"
    r"|(?P<open_square>\[)"
    r"|:\s*(?P<weight>[+-]?(?:\d+\.?\d*|\.\d+))\s*\)"
    r"|(?P<close_round>\))"
    r"|(?P<close_square>\])"
    r"|(?P<brk>\bBREAK\b)"
    r"|(?P<text>[^\\()\[\]:B]+|.)",
    re.DOTALL,
)


def strip_extra_networks(prompt: str) -> str:
    """Remove A1111 extra-network tags (`<lora:name:0.8>`): LoRAs are applied as adapters."""
    return re.sub(r"\s{2,}", " ", _EXTRA_NETWORK.sub("", prompt)).strip()


def parse_attention(prompt: str) -> list[tuple[str, float]]:
    r"""Split a prompt into (text, weight) runs; a BREAK is ("BREAK", -1.0).

    `(x)` multiplies by 1.1, `[x]` divides by 1.1, `(x:w)` multiplies by w; `\(` is a literal
    bracket; unclosed brackets apply to the rest of the prompt, as in A1111.
    """
    runs: list[list[Any]] = []
    round_open: list[int] = []
    square_open: list[int] = []

    def scale(start: int, factor: float) -> None:
        for run in runs[start:]:
            if run[1] >= 0:
                run[1] *= factor

    for match in _PIECE.finditer(prompt):
        kind = match.lastgroup
        if kind == "escaped":
            runs.append([match.group(0)[1], 1.0])
        elif kind == "open_round":
            round_open.append(len(runs))
        elif kind == "open_square":
            square_open.append(len(runs))
        elif kind == "weight" and round_open:
            scale(round_open.pop(), float(match.group("weight")))
        elif kind == "close_round" and round_open:
            scale(round_open.pop(), _ROUND)
        elif kind == "close_square" and square_open:
            scale(square_open.pop(), _SQUARE)
        elif kind == "brk":
            runs.append(["BREAK", -1.0])
        else:
            runs.append([match.group(0), 1.0])
    for start in round_open:
        scale(start, _ROUND)
    for start in square_open:
        scale(start, _SQUARE)
    merged: list[list[Any]] = []
    for text, weight in runs:
        if merged and merged[-1][1] == weight and weight >= 0:
            merged[-1][0] += text
        else:
            merged.append([text, weight])
    return [(text, weight) for text, weight in merged] or [("", 1.0)]


@dataclass
class _Chunks:
    tokens: list[list[int]]
    weights: list[list[float]]


def _chunk(tokenizer: Any, prompt: str) -> _Chunks:
    """Tokenise weighted runs into windows of at most CHUNK tokens (BREAK starts a new one)."""
    tokens: list[list[int]] = [[]]
    weights: list[list[float]] = [[]]
    for text, weight in parse_attention(prompt):
        if weight < 0:  # BREAK
            tokens.append([])
            weights.append([])
            continue
        for token in tokenizer(text, add_special_tokens=False, truncation=False).input_ids:
            if len(tokens[-1]) == CHUNK:
                tokens.append([])
                weights.append([])
            tokens[-1].append(token)
            weights[-1].append(weight)
    return _Chunks(tokens, weights)


def _window(tokenizer: Any, tokens: list[int]) -> list[int]:
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    ids = [tokenizer.bos_token_id, *tokens, tokenizer.eos_token_id]
    return ids + [pad] * (CHUNK + 2 - len(ids))


def _encode_window(
    encoder: Any, ids: list[int], weights: list[float], layer: int, final_norm: bool
) -> tuple[Any, Any]:
    """Hidden states of one 77-token window at `layer`, weighted, mean restored; and its pooled."""
    import torch

    input_ids = torch.tensor([ids], device=encoder.device)
    output = encoder(input_ids, output_hidden_states=True)
    hidden = output.hidden_states[layer]
    if final_norm:
        hidden = getattr(encoder, "text_model", encoder).final_layer_norm(hidden)
    full = [1.0, *weights, 1.0] + [1.0] * (CHUNK - len(weights))
    if any(w != 1.0 for w in full):
        multipliers = torch.tensor(full, dtype=hidden.dtype, device=hidden.device)
        mean = hidden.mean()
        hidden = hidden * multipliers[None, :, None]
        hidden = hidden * (mean / hidden.mean())
    pooled = getattr(output, "text_embeds", None)
    return hidden, pooled


def _encode(pipe: Any, prompt: str, clip_skip: int | None, n_chunks: int) -> tuple[Any, Any]:
    """Embeddings (and SDXL pooled) of a prompt, padded with empty windows to `n_chunks`."""
    import torch

    sdxl = getattr(pipe, "text_encoder_2", None) is not None
    pairs = [(pipe.tokenizer, pipe.text_encoder)]
    if sdxl:
        pairs.append((pipe.tokenizer_2, pipe.text_encoder_2))
    skip = clip_skip or 0
    # SD 1.5 reads the last layer through the final norm; SDXL the penultimate one without it.
    layer = -(skip + 2) if sdxl else -(skip + 1)
    per_encoder: list[Any] = []
    pooled = None
    for tokenizer, encoder in pairs:
        chunks = _chunk(tokenizer, prompt)
        windows = list(zip(chunks.tokens, chunks.weights, strict=True))
        windows += [([], [])] * (n_chunks - len(windows))
        hidden = []
        for index, (tokens, weights) in enumerate(windows):
            states, window_pooled = _encode_window(
                encoder, _window(tokenizer, tokens), weights, layer, final_norm=not sdxl
            )
            hidden.append(states)
            if index == 0 and window_pooled is not None:
                pooled = window_pooled  # A1111 and diffusers pool the first window
        per_encoder.append(torch.cat(hidden, dim=1))
    embeds = torch.cat(per_encoder, dim=-1)
    dtype = (pipe.text_encoder_2 if sdxl else pipe.text_encoder).dtype
    return embeds.to(dtype), None if pooled is None else pooled.to(dtype)


def n_chunks(pipe: Any, *prompts: str) -> int:
    """Windows the longest of the prompts needs (prompt and negative must match in length)."""
    return max(len(_chunk(pipe.tokenizer, prompt).tokens) for prompt in prompts)


def encode_prompts(
    pipe: Any, prompt: str, negative_prompt: str, clip_skip: int | None
) -> dict[str, Any]:
    """Keyword arguments for an SD 1.5 / SDXL pipeline call with A1111-style embeddings.

    `clip_skip` is in diffusers' convention (None = default layer). An empty negative prompt on a
    pipeline with `force_zeros_for_empty_prompt` (SDXL) gives zero embeddings, as diffusers does.
    """
    import torch

    prompt = strip_extra_networks(prompt)
    negative_prompt = strip_extra_networks(negative_prompt)
    count = n_chunks(pipe, prompt, negative_prompt)
    embeds, pooled = _encode(pipe, prompt, clip_skip, count)
    if not negative_prompt and getattr(pipe.config, "force_zeros_for_empty_prompt", False):
        negative, negative_pooled = torch.zeros_like(embeds), torch.zeros_like(pooled)
    else:
        negative, negative_pooled = _encode(pipe, negative_prompt, clip_skip, count)
    kwargs = {"prompt_embeds": embeds, "negative_prompt_embeds": negative}
    if pooled is not None:
        kwargs["pooled_prompt_embeds"] = pooled
        kwargs["negative_pooled_prompt_embeds"] = negative_pooled
    return kwargs
