"""Print scoring cost with the tiny random scorers: load time, ms per image, cache hits.

Run: .venv/bin/python bench/bench_scoring.py
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from diffagent.tools.scoring import ScoringConfig, UnifiedScorer
from diffagent.tools.testing.score_tiny import make_tiny_scorer_weights

PROMPT = "a cute happy corgi, pixel art"


def main() -> None:
    rng = np.random.default_rng(0)
    images = [
        Image.fromarray(rng.integers(0, 256, size=(512, 512, 3), dtype=np.uint8)) for _ in range(8)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_tiny_scorer_weights(Path(tmp) / "weights")
        for batch_size in (1, 8):
            scorer = UnifiedScorer(ScoringConfig.from_tiny(paths, batch_size=batch_size))
            start = time.perf_counter()
            scorer.score(PROMPT, images[:1])
            load = time.perf_counter() - start
            start = time.perf_counter()
            scorer.score(PROMPT, images)
            per_image = (time.perf_counter() - start) / len(images)
            print(
                f"batch {batch_size}: first call (loads 3 models) {load:.2f} s, "
                f"{1000 * per_image:.1f} ms/image for all three scorers"
            )
        cached = UnifiedScorer(ScoringConfig.from_tiny(paths, cache_path=Path(tmp) / "c.sqlite"))
        seeds = list(range(len(images)))
        cached.score(PROMPT, images, seeds=seeds)
        start = time.perf_counter()
        report = cached.score(PROMPT, images, seeds=seeds)
        hit = time.perf_counter() - start
        print(f"cache hit: {1000 * hit / len(images):.2f} ms/image, computed={report.computed}")


if __name__ == "__main__":
    main()
