"""Time `catalog build` on the shared Civitai crawl and print its stage counts.

Run: .venv/bin/python bench/bench_catalog_build.py [OUT_DIR]   (default: a temporary folder)
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from diffagent.index.builder.build import BuildConfig, build_catalog, format_stats, write_catalog
from diffagent.paths import civitai_crawl


def main() -> int:
    crawl = civitai_crawl()
    if crawl is None:
        print("skipped: ../shared/data/civitai-models-2023-07.jsonl.gz is absent")
        return 0
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(scratch)
        started = time.perf_counter()
        result = build_catalog([crawl], BuildConfig(progress=False))
        built = time.perf_counter() - started
        write_catalog(result, out)
        total = time.perf_counter() - started
    print(format_stats(result.stats))
    print(f"build {built:.1f} s, build + write {total:.1f} s (target < 300 s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
