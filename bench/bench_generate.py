"""Time per image for generate (+score when the scoring tools are present) with tiny weights.

Also measures the tool's overhead around the raw diffusers call (same pipeline, scheduler and
adapters, called directly): target <= 10%. Run:

    .venv/bin/python bench/bench_generate.py [--weights DIR] [--repeats 5] [--kind sd15|sdxl]
        [--threads 1]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    """Build or reuse tiny weights, warm up, then time tool vs raw calls, interleaved."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--weights", type=Path, default=None, help="make-tiny-weights DIR")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--kind", choices=["sd15", "sdxl"], default="sd15")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch default)")
    args = parser.parse_args()

    import torch

    if args.threads > 0:
        torch.set_num_threads(args.threads)

    from diffagent.api import T2IApi
    from diffagent.cards import read_cards
    from diffagent.tools.generate import GenerationConfig, Generator, diffusers_clip_skip
    from diffagent.tools.testing.tiny import make_tiny_weights

    folder = args.weights or Path(tempfile.mkdtemp(prefix="bench-generate-"))
    if not (folder / "cards.jsonl").is_file():
        make_tiny_weights(folder)
    paths = {"cards": folder / "cards.jsonl"}
    cards = {card.version_id: card for card in read_cards(paths["cards"])}
    api = T2IApi.model_validate_json((folder / f"tiny-{args.kind}-api.json").read_text())
    checkpoint = cards[api.version_id]  # type: ignore[index]
    loras = [cards[lora.version_id] for lora in api.loras]
    seeds = list(range(1, args.seeds + 1))

    gen = Generator(GenerationConfig(model_store=folder, device="cpu"))
    start = time.perf_counter()
    gen.generate(api, seeds, checkpoint, loras)  # load + warm-up
    first = time.perf_counter() - start
    pipe = next(iter(gen._pipelines.values())).pipe

    def raw() -> None:
        generators = [torch.Generator("cpu").manual_seed(seed) for seed in seeds]
        with torch.inference_mode():
            pipe(
                prompt=api.prompt,
                negative_prompt=api.negative_prompt,
                width=api.width,
                height=api.height,
                num_inference_steps=api.sampling_steps,
                guidance_scale=api.cfg_scale,
                num_images_per_prompt=len(seeds),
                generator=generators,
                clip_skip=diffusers_clip_skip(api.clip_skip) if args.kind == "sdxl" else None,
                output_type="pil",
            )

    tool_times, raw_times = [], []
    for _ in range(args.repeats):
        start = time.perf_counter()
        images = gen.generate(api, seeds, checkpoint, loras)
        tool_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        raw()
        raw_times.append(time.perf_counter() - start)
    tool, base = statistics.median(tool_times), statistics.median(raw_times)
    print(
        f"kind={args.kind} size={api.width}x{api.height} steps={api.sampling_steps} "
        f"seeds={len(seeds)} repeats={args.repeats} threads={torch.get_num_threads()}"
    )
    print(f"first call (load + LoRA + warm-up): {first:.2f} s")
    print(f"generate: {tool / len(seeds) * 1000:.1f} ms/image (median {tool:.3f} s per call)")
    print(f"raw diffusers call: {base / len(seeds) * 1000:.1f} ms/image (median {base:.3f} s)")
    print(f"tool overhead: {(tool - base) / base * 100:+.1f}% (target <= 10%)")

    if importlib.util.find_spec("diffagent.tools.scoring") is None:
        print("scoring: diffagent.tools.scoring not present, skipped")
        return
    from diffagent.tools.scoring import ScoringConfig, UnifiedScorer
    from diffagent.tools.testing.score_tiny import make_tiny_scorer_weights

    scorer = UnifiedScorer(ScoringConfig.from_tiny(make_tiny_scorer_weights(folder)))
    scorer.score(api.prompt, images)  # load + warm-up
    score_times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        scorer.score(api.prompt, images)
        score_times.append(time.perf_counter() - start)
    score = statistics.median(score_times)
    print(f"score: {score / len(seeds) * 1000:.1f} ms/image")
    print(f"generate+score: {(tool + score) / len(seeds) * 1000:.1f} ms/image")


if __name__ == "__main__":
    main()
