"""End to end through the agent: tiny SD weights in a model store -> k images -> unified score."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from diffagent.agent.service import DiffAgent
from diffagent.index.catalog import Catalog
from diffagent.tools.generate import GenerationConfig
from diffagent.tools.scoring import ScoringConfig
from diffagent.tools.testing.score_tiny import make_tiny_scorer_weights
from diffagent.tools.testing.tiny import make_tiny_weights

from ..fakes import FakeIndex, settings_for


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny models gain nothing from threads; on busy cores OpenMP spinning costs 10x."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Path], dict[str, Path]]:
    root = tmp_path_factory.mktemp("tiny")
    return make_tiny_weights(root / "store"), make_tiny_scorer_weights(root / "scorers")


def _agent(tiny: tuple[dict[str, Path], dict[str, Path]], tmp_path: Path) -> DiffAgent:
    weights, scorers = tiny
    store = weights["cards"].parent
    config = settings_for(
        catalog_dir=store,
        mode="retrieval",
        checkpoint_db=tmp_path / "conversations.sqlite",
        generation=GenerationConfig(model_store=store, device="cpu"),
        scoring=ScoringConfig.from_tiny(scorers, cache_path=tmp_path / "scores.sqlite"),
        seeds=2,
        seed=7,
        output_dir=tmp_path / "images",
    )
    return DiffAgent.create(config, index=FakeIndex(Catalog.load(store)))


def test_a_turn_generates_k_images_and_scores_them(
    tiny: tuple[dict[str, Path], dict[str, Path]], tmp_path: Path
) -> None:
    agent = _agent(tiny, tmp_path)
    session = agent.new_session()

    turn = agent.reply(session, "tiny checkpoint: a lighthouse at dusk, SD 1.5")

    assert turn.api is not None and turn.api.base_model == "SD 1.5"
    assert turn.card is not None and turn.card.name.startswith("Tiny SD 1.5")
    assert len(turn.images) == 2
    assert all(Path(path).is_file() for path in turn.images)
    assert [Path(path).stem.rsplit("-", 1)[1] for path in turn.images] == ["7", "8"]
    assert turn.scores is not None
    per_image = turn.scores["per_image"]
    assert len(per_image) == 2
    unified = turn.scores["unified"]
    assert 0.0 <= unified <= 1.0
    # Eq. 4: the unified metric is the mean over seeds of each image's unified score.
    assert unified == pytest.approx(sum(image["unified"] for image in per_image) / 2, abs=1e-6)
    assert "Unified score" in turn.reply


def test_a_refinement_regenerates_with_the_new_size(
    tiny: tuple[dict[str, Path], dict[str, Path]], tmp_path: Path
) -> None:
    agent = _agent(tiny, tmp_path)
    session = agent.new_session()
    first = agent.reply(session, "tiny checkpoint: a red fox in the snow, SD 1.5")
    assert first.api is not None and first.images

    second = agent.reply(session, "make it 128x64")

    assert second.api is not None
    assert (second.api.width, second.api.height) == (128, 64)
    assert second.api.version_id == first.api.version_id
    assert second.images and set(second.images).isdisjoint(first.images)
    # Same prompt and seeds, another API: the score cache must not hand back the first scores.
    assert first.scores is not None and second.scores is not None
    assert second.scores["unified"] != first.scores["unified"]
    from PIL import Image

    with Image.open(second.images[0]) as image:
        assert image.size == (128, 64)


def test_chat_command_with_a_model_store_makes_and_scores_images(
    tiny: tuple[dict[str, Path], dict[str, Path]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import io

    from diffagent.ui.cli import main

    weights, scorers = tiny
    store = weights["cards"].parent
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    (catalog / "cards.jsonl").write_bytes(weights["cards"].read_bytes())
    # The tiny scorers' architectures are config files: given as settings, weights as flags.
    monkeypatch.setenv("DIFFAGENT_SCORING__CLIP_ARCH", str(scorers["clip_arch"]))
    monkeypatch.setenv("DIFFAGENT_SCORING__HPS_ARCH", str(scorers["hps_arch"]))
    monkeypatch.setattr("sys.stdin", io.StringIO("tiny checkpoint: a lighthouse at dusk\nexit\n"))
    argv = [
        "chat", "--catalog", str(catalog), "--mode", "retrieval", "--db", str(tmp_path / "c.db"),
        "--model-store", str(store), "--device", "cpu", "--seeds", "2", "--seed", "3",
        "--output-dir", str(tmp_path / "images"),
        "--clip-weights", str(scorers["clip"]), "--hps-weights", str(scorers["hps"]),
    ]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    images = sorted((tmp_path / "images").glob("*.png"))
    assert [path.stem.rsplit("-", 1)[1] for path in images] == ["3", "4"]
    assert "Images: " in out and "Unified score" in out
