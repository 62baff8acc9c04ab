"""The agent's command line: select files, recommend output, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from diffagent.cards import write_cards
from diffagent.ui.cli import main

from .conftest import CARDS


@pytest.fixture(scope="module")
def catalog_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cli-catalog")
    write_cards(CARDS, path / "cards.jsonl")
    return path


def test_select_recommend_and_bad_input(catalog_dir: Path, tmp_path: Path, capsys) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        json.dumps({"id": "a", "prompt": "neon cyberpunk city at night"})
        + "\n"
        + json.dumps({"id": "b", "prompt": "anime girl", "negative_prompt": "blurry"})
        + "\n"
        + json.dumps({"id": "c", "prompt": ""})
        + "\n"
    )
    out = tmp_path / "apis.jsonl"
    args = ["--catalog", str(catalog_dir), "--mode", "retrieval"]
    assert main(["select", "--in", str(prompts), "--out", str(out), *args]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["a", "b", "c"]
    assert rows[0]["api"]["model"] == "CyberCity" and rows[0]["api"]["version_id"] == 1004
    assert rows[1]["api"]["negative_prompt"].startswith("blurry")
    assert rows[2]["api"] is None and rows[2]["error"]
    assert all(isinstance(r["latency_ms"], float) and r["hallucinated"] is False for r in rows)

    capsys.readouterr()
    assert main(["recommend", "neon cyberpunk city at night", "--export", "a1111", *args]) == 0
    printed = capsys.readouterr().out
    assert "CyberCity" in printed and "--- a1111 ---" in printed and "cybercity" in printed

    prompts.write_text('{"id": "x", "text": "no prompt key"}\n')
    assert main(["select", "--in", str(prompts), "--out", str(out), *args]) == 2
    assert "prompts.jsonl:1" in capsys.readouterr().err
