"""Evaluation prompt sets: DABench test pairs, COCO captions, PartiPrompts (paper, Sec. 4.1)."""

from __future__ import annotations

import csv
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from diffagent.paths import shared_data_dir

PromptSetName = Literal["dabench-test", "coco", "parti"]
PROMPT_SETS: tuple[str, ...] = get_args(PromptSetName)
COCO_FILE = "prompts/coco-captions.csv"
PARTI_FILE = "prompts/PartiPrompts.tsv"
# The paper draws 1,000 prompts at random from COCO and Parti and uses DABench's whole split.
PAPER_SAMPLE = 1000


@dataclass(frozen=True)
class EvalPrompt:
    """One evaluation prompt; `version_id` is the true card for DABench pairs, else None."""

    id: str
    prompt: str
    negative_prompt: str = ""
    version_id: int | None = None


def load_prompt_set(
    name: str,
    *,
    catalog_dir: Path | None = None,
    shared_dir: Path | None = None,
    limit: int | None = None,
    seed: int = 0,
) -> list[EvalPrompt]:
    """A prompt set in a fixed random order (seeded), cut to `limit` prompts.

    dabench-test reads `catalog_dir/pairs/test.jsonl`; coco and parti read the shared data
    folder's prompts (default `../shared/data`, `DIFFAGENT_SHARED_DATA` moves it). Without a
    limit, COCO and Parti give the paper's 1,000 random prompts and DABench its whole split.
    """
    if name not in PROMPT_SETS:
        raise ValueError(f"unknown prompt set {name!r}; allowed: {', '.join(PROMPT_SETS)}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    if name == "dabench-test":
        if catalog_dir is None:
            raise ValueError("prompt set 'dabench-test' needs the catalog folder (--catalog)")
        rows = _dabench(Path(catalog_dir) / "pairs" / "test.jsonl")
    else:
        root = shared_dir or shared_data_dir()
        if root is None:
            raise FileNotFoundError(
                f"prompt set {name!r} needs the shared data folder ../shared/data "
                "(set DIFFAGENT_SHARED_DATA)"
            )
        rows = _coco(root / COCO_FILE) if name == "coco" else _parti(root / PARTI_FILE)
    random.Random(seed).shuffle(rows)
    if limit is None and name != "dabench-test":
        limit = PAPER_SAMPLE
    return rows[:limit] if limit is not None else rows


def _require(path: Path) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"prompt file not found: {path}")
    return path


def _dabench(path: Path) -> list[EvalPrompt]:
    rows: list[EvalPrompt] = []
    with _require(path).open(encoding="utf-8") as handle:
        for line in handle:
            if not line.strip():
                continue
            pair = json.loads(line)
            instruction = pair["instruction"]
            rows.append(
                EvalPrompt(
                    id=str(pair["id"]),
                    prompt=str(instruction["prompt"]),
                    negative_prompt=str(instruction.get("negative_prompt") or ""),
                    version_id=pair.get("api", {}).get("version_id"),
                )
            )
    return rows


def _coco(path: Path) -> list[EvalPrompt]:
    with _require(path).open(encoding="utf-8", newline="") as handle:
        return [
            EvalPrompt(id=f"coco-{row['image_id']}", prompt=" ".join(row["prompt"].split()))
            for row in csv.DictReader(handle)
            if row.get("prompt", "").strip()
        ]


def _parti(path: Path) -> list[EvalPrompt]:
    with _require(path).open(encoding="utf-8", newline="") as handle:
        return [
            EvalPrompt(id=f"parti-{number}", prompt=" ".join(row["Prompt"].split()))
            for number, row in enumerate(csv.DictReader(handle, delimiter="\t"))
            if row.get("Prompt", "").strip()
        ]
