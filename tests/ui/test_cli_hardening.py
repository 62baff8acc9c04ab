"""Command-line errors the README promises as one line and exit code 2, never a traceback."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from diffagent.ui.cli import main

FIXTURE = Path(__file__).parents[1] / "index" / "fixtures" / "civitai-models.jsonl"


def _one_line_error(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("cut", [0.5, 0.9])
def test_truncated_gzip_crawl_is_one_line(tmp_path: Path, capsys, cut: float) -> None:
    data = gzip.compress(FIXTURE.read_bytes())
    crawl = tmp_path / "crawl.jsonl.gz"
    crawl.write_bytes(data[: int(len(data) * cut)])
    args = ["catalog", "build", "--civitai", str(crawl), "--out", str(tmp_path / "out"), "--quiet"]
    assert main(args) == 2
    assert "truncated or damaged" in _one_line_error(capsys)


@pytest.mark.parametrize("content", ["", "\n\n"])
def test_empty_crawl_is_an_error_not_an_empty_catalog(tmp_path: Path, capsys, content) -> None:
    crawl = tmp_path / "crawl.jsonl"
    crawl.write_text(content)
    out = tmp_path / "out"
    args = ["catalog", "build", "--civitai", str(crawl), "--out", str(out), "--quiet"]
    assert main(args) == 2
    assert "0 cards" in _one_line_error(capsys)
    assert not (out / "cards.jsonl").exists()


def test_filters_that_keep_nothing_are_an_error(tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    args = ["catalog", "build", "--civitai", str(FIXTURE), "--out", str(out), "--quiet"]
    assert main([*args, "--min-model-downloads", str(10**12)]) == 2
    assert "0 cards" in _one_line_error(capsys)


def test_select_on_an_empty_catalog_is_one_line(tmp_path: Path, capsys) -> None:
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    (catalog / "cards.jsonl").write_text("")
    prompts = tmp_path / "in.jsonl"
    prompts.write_text(json.dumps({"id": "a", "prompt": "a cat"}) + "\n")
    args = ["select", "--catalog", str(catalog), "--in", str(prompts)]
    assert main([*args, "--out", str(tmp_path / "out.jsonl"), "--mode", "retrieval"]) == 2
    assert "has no cards" in _one_line_error(capsys)
