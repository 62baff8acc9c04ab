"""SFT data in the planner's run-time formats, and a 3-step smoke run of the SFT trainer."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from diffagent.agent import prompts
from diffagent.agent.card_api import recommended_size
from diffagent.agent.llm_embedded import EmbeddedBackend
from diffagent.cards import ModelCard
from diffagent.finetune.data import (
    Pair,
    check_groups,
    generate_answer,
    read_pairs,
    sft_examples,
    with_truth,
)
from diffagent.finetune.sft import (
    SFTRunConfig,
    build_datasets,
    build_sft_trainer,
    cut_examples,
    last_checkpoint,
)
from diffagent.ui.cli import main


def test_test_split_is_never_read_for_training(catalog_dir) -> None:
    assert len(read_pairs(catalog_dir, "train")) == 6
    with pytest.raises(ValueError, match="not 'test'"):
        read_pairs(catalog_dir, "test")


def test_rank_rows_are_the_run_time_prefix_and_answer_line(catalog_dir, catalog) -> None:
    pairs = read_pairs(catalog_dir, "train")
    rows = list(sft_examples(catalog, pairs, ("rank",)))
    assert len(rows) == len(pairs)
    for pair, row in zip(pairs, rows, strict=True):
        card = catalog.get(pair.version_id)
        assert row["prompt"] == prompts.rank_messages(pair.prompt, pair.negative_prompt)
        answer = prompts.render_rank_candidate(card, *recommended_size(card))
        assert row["completion"] == [{"role": "assistant", "content": answer}]


def test_generate_rows_hold_the_truth_and_a_schema_answer(catalog_dir, catalog) -> None:
    pairs = read_pairs(catalog_dir, "train")
    rows = list(sft_examples(catalog, pairs, ("generate",)))
    schema = prompts.generate_json_schema()
    for pair, row in zip(pairs, rows, strict=True):
        answer = json.loads(row["completion"][0]["content"])
        assert set(schema["required"]) <= set(answer)
        assert answer["version_id"] == pair.version_id
        assert (answer["width"], answer["sampling_steps"]) == (512, 24)  # the pair's own params
        assert f'"version_id": {pair.version_id}' in row["prompt"][0]["content"]  # among cards
    # The generate primer of the embedded planner continues this answer exactly.
    assert generate_answer(catalog.get(1001)).startswith('{"model":')


def test_generate_rows_show_the_answers_card_when_the_source_misses_it(
    catalog_dir, catalog
) -> None:
    pairs = read_pairs(catalog_dir, "train")

    def others(pair: Pair) -> list[ModelCard]:
        return [card for card in catalog if card.version_id != pair.version_id][:3]

    rows = list(sft_examples(catalog, pairs, ("generate",), candidates=others))
    for pair, row in zip(pairs, rows, strict=True):
        block = row["prompt"][0]["content"]
        assert block.count('"version_id": ') == 3  # still k cards
        assert f'"version_id": {pair.version_id}' in block
        assert json.loads(row["completion"][0]["content"])["version_id"] == pair.version_id


def test_generate_cards_sets_how_many_candidates_an_example_shows(
    catalog_dir, catalog, tmp_path
) -> None:
    config = SFTRunConfig(
        catalog=catalog_dir, out=tmp_path / "out", format="generate", generate_cards=3
    )
    shown = {}
    for cards in (3, 8):
        train, val = build_datasets(config.model_copy(update={"generate_cards": cards}), catalog)
        assert len(train) == 6 and val is not None
        shown[cards] = [row["prompt"][0]["content"].count('"version_id": ') for row in train]
        for row in train:
            answer = json.loads(row["completion"][0]["content"])
            assert f'"version_id": {answer["version_id"]}' in row["prompt"][0]["content"]
    # Cards of the answer's base only: an SDXL pair has fewer in this small catalog.
    assert max(shown[3]) == 3 and max(shown[8]) > 3
    assert all(few <= many for few, many in zip(shown[3], shown[8], strict=True))


def test_truth_is_put_into_candidate_lists_and_groups_are_checked(catalog) -> None:
    cards = [catalog.get(v) for v in (1101, 1201, 1301)]
    assert [c.version_id for c in with_truth(cards, catalog.get(1001), 2)] == [1101, 1001]
    with pytest.raises(ValueError, match="same number"):
        check_groups(
            [{"responses": ["a", "b"], "scores": [0, 1]}, {"responses": ["a"], "scores": [1]}]
        )


def _lora(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}


def test_sft_smoke_three_steps_changes_the_adapter_and_resumes(
    catalog_dir, tiny_planner, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = SFTRunConfig(
        catalog=catalog_dir,
        out=tmp_path / "adapter",
        model_dir=tiny_planner,
        format="both",
        max_steps=6,
        stop_at_step=3,  # the schedule runs over 6 steps; the run stops (and saves) after 3
        batch_size=2,
        save_steps=5,
        lr=1e-2,
        max_val=2,
        threads=1,
    )
    trainer = build_sft_trainer(config)
    before = _lora(trainer.model)
    assert before
    result = trainer.train()
    after = _lora(trainer.model)
    assert math.isfinite(result.training_loss) and result.global_step == 3
    assert any(not torch.equal(before[n], after[n]) for n in before)
    assert last_checkpoint(config.out / "checkpoints").name == "checkpoint-3"
    # The command with a higher step budget resumes from that checkpoint, saves and plots.
    args = ["finetune", "sft", "--catalog", str(catalog_dir), "--out", str(config.out)]
    args += ["--model-dir", str(tiny_planner), "--format", "both", "--max-steps", "4"]
    args += ["--batch-size", "2", "--save-steps", "3", "--lr", "1e-2", "--max-val", "2"]
    assert main([*args, "--threads", "1", "--plot", str(tmp_path / "curve.png")]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["resumed_from"].endswith("checkpoint-3") and report["steps"] == 4
    assert (tmp_path / "curve.png").stat().st_size > 1000
    log = json.loads((config.out / "training_log.json").read_text())
    assert any("eval_loss" in row for row in log["history"])
    # The embedded planner loads the adapter and scores with it.
    plain = EmbeddedBackend(tiny_planner, dtype="float32")
    tuned = EmbeddedBackend(tiny_planner, adapter_path=config.out, dtype="float32")
    messages = prompts.rank_messages("a castle, oil painting", "")
    assert plain.score_continuations(messages, ["PaintDream"]) != tuned.score_continuations(
        messages, ["PaintDream"]
    )


def test_examples_spoiled_by_max_length_are_reported(
    catalog_dir, tiny_planner, tmp_path, capsys
) -> None:
    def trainer_with(max_length: int) -> Any:
        config = SFTRunConfig(
            catalog=catalog_dir,
            out=tmp_path / f"out-{max_length}",
            model_dir=tiny_planner,
            format="generate",
            max_length=max_length,
            max_val=2,
            threads=1,
        )
        return build_sft_trainer(config)

    full = [len(ids) for ids in trainer_with(4096).train_dataset["input_ids"]]
    assert len(full) == 6 and "warning" not in capsys.readouterr().err
    # Between the shortest and the longest: the long ones lose their answers' ends or all of them.
    limit = min(full) + 5
    kept = trainer_with(limit).train_dataset
    assert "warning: of 6 examples" in capsys.readouterr().err
    dropped, cut = cut_examples(6, kept, limit)
    assert dropped == 6 - len(kept) and cut + sum(n < limit for n in full) >= len(kept)
    assert dropped + cut == sum(n >= limit for n in full)


def test_shipped_adapter_is_in_the_package_and_small() -> None:
    from importlib import resources

    folder = Path(str(resources.files("diffagent.agent") / "adapters" / "planner-rank"))
    config = json.loads((folder / "adapter_config.json").read_text())
    weights = folder / "adapter_model.safetensors"
    assert config["peft_type"] == "LORA" and config["layers_to_transform"] == list(range(22, 30))
    assert 0 < weights.stat().st_size <= 10 * 1024 * 1024
    log = json.loads((folder / "training_log.json").read_text())
    # SFT in rank format, then RRHF over rank-mode answer lines (make planner-adapter)
    assert log["config"]["reward"] == "catalog" and log["config"]["sft"]
    assert log["summary"]["steps"] > 0 and log["summary"]["responses_per_group"] > 1
