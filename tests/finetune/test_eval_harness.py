"""The evaluation harness end to end on tiny weights: Tables 1 and 2, report files, cache reuse."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from diffagent.cards import ModelCard, read_cards, write_cards
from diffagent.finetune.eval_harness import EvalConfig, PlannerSpec, run_eval
from diffagent.finetune.eval_plans import is_usable
from diffagent.finetune.eval_report import write_report
from diffagent.finetune.prompt_sets import load_prompt_set
from diffagent.index.catalog import Catalog

from ..fakes import make_card

PROMPTS = ["a lighthouse at dusk, oil painting", "a red fox in the snow"]


class ScriptedPlanner:
    """Replies in turn with the scripted texts (generate mode only)."""

    name = "scripted"

    def __init__(self, replies: list[str]) -> None:
        self.replies = list(replies)
        self.calls = 0

    def complete(
        self,
        messages: list[dict[str, str]],
        *,
        json_schema: dict[str, Any] | None = None,
        max_new_tokens: int = 256,
    ) -> str:
        reply = self.replies[self.calls % len(self.replies)]
        self.calls += 1
        return reply

    def score_continuations(
        self, messages: list[dict[str, str]], continuations: list[str]
    ) -> list[float]:
        raise NotImplementedError


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    import torch

    from diffagent.tools.testing.tiny import make_tiny_weights

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("tiny")
    make_tiny_weights(folder)
    yield folder
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def catalog_dir(tiny_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny SD 1.5 cards plus a LoRA card without weights (it runs on the tiny LoRA stand-in)."""
    folder = tmp_path_factory.mktemp("catalog")
    cards: list[ModelCard] = [
        card for card in read_cards(tiny_folder / "cards.jsonl") if card.base_model == "SD 1.5"
    ]
    cards.append(make_card(555, "Pixel Style", kind="LORA", tags=["pixel art"], steps=3))
    write_cards(cards, folder / "cards.jsonl")
    (folder / "pairs").mkdir()
    rows = [
        {
            "id": f"p{i}",
            "image_id": i,
            "instruction": {"prompt": prompt, "negative_prompt": "blurry"},
            "api": {"version_id": 990001},
        }
        for i, prompt in enumerate(PROMPTS)
    ]
    (folder / "pairs" / "test.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return folder


def _reply(model: str, version_id: int, kind: str, steps: int = 2) -> str:
    return json.dumps(
        {
            "model": model,
            "version_id": version_id,
            "type": kind,
            "base_model": "SD 1.5",
            "width": 64,
            "height": 64,
            "sampling_method": "DPM++ 2M Karras",
            "sampling_steps": steps,
            "cfg_scale": 5,
        }
    )


def test_usable_json_needs_a_valid_api() -> None:
    assert is_usable(json.loads(_reply("Tiny SD 1.5 Checkpoint", 990001, "Checkpoint")))
    assert not is_usable(None)
    assert not is_usable({**json.loads(_reply("x", 1, "Checkpoint")), "width": 65})
    assert not is_usable({**json.loads(_reply("x", 1, "Checkpoint")), "sampling_method": "fast"})


def test_prompt_sets_are_seeded_samples(catalog_dir: Path) -> None:
    first = load_prompt_set("dabench-test", catalog_dir=catalog_dir, seed=3)
    assert sorted(p.prompt for p in first) == sorted(PROMPTS)
    assert first == load_prompt_set("dabench-test", catalog_dir=catalog_dir, seed=3)
    assert first[0].version_id == 990001 and first[0].negative_prompt == "blurry"
    with pytest.raises(ValueError, match="allowed: dabench-test, coco, parti"):
        load_prompt_set("drawbench", catalog_dir=catalog_dir)


@pytest.mark.needs_shared_data
def test_coco_and_parti_come_from_shared_data() -> None:
    coco = load_prompt_set("coco", limit=5)
    parti = load_prompt_set("parti", limit=5)
    assert len(coco) == len(parti) == 5
    assert all(p.prompt and p.version_id is None for p in coco + parti)
    assert len(load_prompt_set("parti")) == 1000  # the paper's random 1,000


def test_harness_end_to_end_on_tiny_weights(
    catalog_dir: Path, tiny_folder: Path, tmp_path: Path
) -> None:
    catalog = Catalog.load(catalog_dir)
    cards = list(catalog)
    stock = ScriptedPlanner(
        [_reply("Tiny SD 1.5 Checkpoint", 990001, "Checkpoint"), "I would pick a nice model."]
    )
    tuned = ScriptedPlanner(
        [_reply("Pixel Style", 555, "LORA"), _reply("Dreamy Mix 9000", 4242, "Checkpoint")]
    )
    config = EvalConfig(
        catalog_dir=catalog_dir,
        prompt_sets=["dabench-test"],
        out_dir=tmp_path / "report",
        planners=[PlannerSpec(name="stock"), PlannerSpec(name="rrhf")],
        seeds=1,
        device="cpu",
        tiny_weights=tiny_folder,
        default_params={"sampling_method": "Euler a", "sampling_steps": 2, "cfg_scale": 7.0},
    )
    backends = {"stock": stock, "rrhf": tuned}
    report = run_eval(config, backends=backends, candidates=lambda text, k: cards[:k])  # type: ignore[arg-type]

    table1 = {row.planner: row for row in report.table1}
    assert table1["stock"].n == 2 and table1["stock"].usable_json == 0.5
    assert table1["stock"].hallucination == 0.5  # the reply without JSON names no card
    assert table1["rrhf"].usable_json == 1.0 and table1["rrhf"].hallucination == 0.5
    assert all(row.hallucination_after_repair == 0 for row in report.table1)
    rows = [row.row for row in report.table2]
    assert rows == ["Baseline", "Baseline*", "DiffAgent#", "DiffAgent-stock", "DiffAgent-rrhf"]
    for row in report.table2:
        assert row.n == 2
        assert 0 <= row.unified <= 1
        assert set(row.normalised) == {"clip", "imagereward", "hps"}
        assert all(0 <= value <= 1 for value in row.normalised.values())
    assert 0 < report.images_generated <= report.row_judgements

    paths = write_report(report, tmp_path / "report")
    assert {"json", "markdown", "table1_png", "table2_png"} <= set(paths)
    assert paths["table2_png"].read_bytes()[:4] == b"\x89PNG"
    text = paths["markdown"].read_text()
    assert "| dabench-test | 50.0 (50.0, n=2) | 50.0 (100.0, n=2) |" in text
    assert json.loads(paths["json"].read_text())["table2"][0]["row"] == "Baseline"

    # A rerun plans nothing (plans are reused) and generates nothing (scores are cached).
    again = run_eval(config, backends=backends, candidates=lambda text, k: cards[:k])  # type: ignore[arg-type]
    assert stock.calls == 2 and tuned.calls == 2
    assert again.images_generated == 0 and again.scores_computed == 0
    assert again.row_judgements_cached == again.row_judgements == report.row_judgements
    assert [r.unified for r in again.table2] == [r.unified for r in report.table2]


def test_cli_errors_are_one_line(catalog_dir: Path, tmp_path: Path, capsys: Any) -> None:
    from diffagent.ui.cli import main

    base = ["finetune", "eval", "--catalog", str(catalog_dir), "--out", str(tmp_path)]
    assert main([*base, "--prompts", "coco", "--adapter", "a/x", "--adapter", "b/x"]) == 2
    assert "name each of several values, e.g. sft=a/x" in capsys.readouterr().err
    planner = ["--planner-url", "http://127.0.0.1:9/v1", "--adapter", "sft=a"]
    assert main([*base, "--prompts", "coco", *planner]) == 2
    assert "--adapter is for the embedded planner" in capsys.readouterr().err
