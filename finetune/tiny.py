"""A tiny random causal LM with the embedded planner's tokenizer, built offline, for tests."""

from __future__ import annotations

from pathlib import Path


def make_tiny_planner(out_dir: Path, seed: int = 0) -> Path:
    """Write a 2-layer random Llama with SmolLM2's tokenizer (read from the packaged GGUF)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from diffagent.agent.llm_embedded import packaged_gguf

    out_dir = Path(out_dir)
    if (out_dir / "config.json").is_file():
        return out_dir
    gguf = packaged_gguf()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir
