"""Unified scorer: CLIP Score convention, normalisation, Eq. 4, batching, cache, errors, CLI."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffagent.tools.score_cache import ScoreCache
from diffagent.tools.scoring import (
    NormRange,
    ScoringConfig,
    UnifiedScorer,
    default_ranges,
    unified_metric,
)
from diffagent.tools.testing.score_tiny import make_tiny_scorer_weights
from diffagent.ui.cli import main

PROMPT = "a cute happy corgi, pixel art"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_tiny_scorer_weights(tmp_path_factory.mktemp("tiny-scorers"))


@pytest.fixture(scope="module")
def images() -> list[Image.Image]:
    rng = np.random.default_rng(7)
    return [
        Image.fromarray(rng.integers(0, 256, size=(64 + 16 * i, 64, 3), dtype=np.uint8))
        for i in range(3)
    ]


@pytest.fixture(scope="module")
def scorer(tiny) -> UnifiedScorer:
    return UnifiedScorer(ScoringConfig.from_tiny(tiny))


def test_tiny_weights_are_deterministic(tiny, tmp_path) -> None:
    again = make_tiny_scorer_weights(tmp_path)
    for key in ("clip", "imagereward"):
        first = torch.load(tiny[key], weights_only=True)
        second = torch.load(again[key], weights_only=True)
        assert first.keys() == second.keys()
        assert all(torch.equal(first[k], second[k]) for k in first)
    other = torch.load(
        make_tiny_scorer_weights(tmp_path / "other", seed=1)["hps"], weights_only=True
    )
    same = torch.load(tiny["hps"], weights_only=True)
    assert not torch.equal(
        other["state_dict"]["text_projection"], same["state_dict"]["text_projection"]
    )


def test_norm_range_maps_and_clips() -> None:
    bounds = NormRange(low=-2.5, high=2.5)
    assert bounds.normalise(0.0) == pytest.approx(0.5)
    assert bounds.normalise(-2.5) == 0.0 and bounds.normalise(2.5) == 1.0
    assert bounds.normalise(-9.0) == 0.0 and bounds.normalise(9.0) == 1.0
    with pytest.raises(ValueError, match="high > low"):
        NormRange(low=1.0, high=1.0)


def test_unified_metric_is_eq4() -> None:
    rows = [
        {"clip": 0.2, "imagereward": 0.5, "hps": 0.8},  # S(t, x_1) = 0.5
        {"clip": 1.0, "imagereward": 0.0, "hps": 0.5},  # S(t, x_2) = 0.5
        {"clip": 0.0, "imagereward": 0.3, "hps": 0.0},  # S(t, x_3) = 0.1
    ]
    assert unified_metric(rows) == pytest.approx((0.5 + 0.5 + 0.1) / 3)
    with pytest.raises(ValueError):
        unified_metric([])


def test_report_scores_normalised_and_averaged(scorer, images) -> None:
    report = scorer.score(PROMPT, images, seeds=[1, 2, 3])
    ranges = default_ranges()
    assert report.scorers == ["clip", "imagereward", "hps"]
    assert [row.seed for row in report.per_image] == [1, 2, 3]
    for row in report.per_image:
        values = [row.clip, row.imagereward, row.hps]
        for name, value in zip(("clip", "imagereward", "hps"), values, strict=True):
            assert value is not None
            assert 0.0 <= value.normalised <= 1.0
            assert value.normalised == pytest.approx(ranges[name].normalise(value.raw))
        assert row.unified == pytest.approx(sum(v.normalised for v in values) / 3)  # type: ignore[union-attr]
    assert report.unified == pytest.approx(np.mean([row.unified for row in report.per_image]))
    assert 0.0 <= report.unified <= 1.0
    assert "2.5 * max(cos" in report.conventions["clip"]


def test_clip_score_is_2_5_max_cos(scorer, images) -> None:
    clip = scorer.scorers["clip"]
    for prompt in (PROMPT, "a castle at night", "zzzz qqqq"):
        cosines = clip.cosines(prompt, images)
        assert clip.score(prompt, images) == pytest.approx([2.5 * max(c, 0.0) for c in cosines])
        assert all(-1.0 <= c <= 1.0 for c in cosines)


def test_batching_does_not_change_scores(tiny, scorer, images) -> None:
    small_batches = UnifiedScorer(ScoringConfig.from_tiny(tiny, batch_size=1))
    one = small_batches.score(PROMPT, images)
    batched = scorer.score(PROMPT, images)
    for a, b in zip(one.per_image, batched.per_image, strict=True):
        for name in ("clip", "imagereward", "hps"):
            assert getattr(a, name).raw == pytest.approx(getattr(b, name).raw, abs=1e-5)


def test_cache_second_call_computes_nothing(tiny, images, tmp_path, monkeypatch) -> None:
    cache_path = tmp_path / "scores.sqlite"
    first = UnifiedScorer(ScoringConfig.from_tiny(tiny, cache_path=cache_path))
    report = first.score(PROMPT, images, api_key='{"model": "a"}', seeds=[10, 11, 12])
    assert report.computed == 9
    # A new scorer on the same cache file must not run any model.
    second = UnifiedScorer(ScoringConfig.from_tiny(tiny, cache_path=cache_path))
    for name, model in second.scorers.items():
        monkeypatch.setattr(model, "score", lambda *a, _n=name, **k: pytest.fail(f"{_n} ran"))
    again = second.score(PROMPT, images, api_key='{"model": "a"}', seeds=[10, 11, 12])
    assert again.computed == 0
    assert again.unified == report.unified
    monkeypatch.undo()
    # A different API key or a new seed is computed; the cached seeds are not.
    partly = second.score(PROMPT, images, api_key='{"model": "a"}', seeds=[10, 11, 99])
    assert partly.computed == 3
    other_api = second.score(PROMPT, images[:1], api_key='{"model": "b"}', seeds=[10])
    assert other_api.computed == 3
    assert len(ScoreCache(cache_path)) == 15


def test_models_load_lazily(tiny) -> None:
    scorer = UnifiedScorer(ScoringConfig.from_tiny(tiny))
    assert all(getattr(s, "_loaded", None) is None for s in scorer.scorers.values())
    assert vars(scorer.scorers["imagereward"])["_model"] is None


def test_bad_inputs(scorer, images) -> None:
    with pytest.raises(ValueError, match="one per image"):
        scorer.score(PROMPT, images, seeds=[1])
    with pytest.raises(ValueError, match="unique"):
        scorer.score(PROMPT, images[:2], seeds=[1, 1])
    with pytest.raises(ValueError, match="at least one image"):
        scorer.score(PROMPT, [])
    with pytest.raises(ValueError, match="non-empty"):
        ScoringConfig(scorers=[])


@pytest.mark.parametrize(
    ("scorer_name", "field", "needle"),
    [
        ("clip", "clip_path", "ViT-B-32.pt"),
        ("imagereward", "imagereward_path", "THUDM/ImageReward"),
        ("imagereward", "imagereward_med_config", "med_config.json"),
        ("hps", "hps_path", "xswu/HPSv2"),
    ],
)
def test_missing_weights_name_what_to_download(tiny, tmp_path, scorer_name, field, needle) -> None:
    config = ScoringConfig.from_tiny(tiny, scorers=[scorer_name], **{field: tmp_path / "nope.pt"})
    with pytest.raises(FileNotFoundError, match=needle) as error:
        UnifiedScorer(config)
    assert str(tmp_path / "nope.pt") in str(error.value)
    unset = ScoringConfig.from_tiny(tiny, scorers=[scorer_name], **{field: None})
    with pytest.raises(FileNotFoundError, match="not configured"):
        UnifiedScorer(unset)


def test_from_env_reads_paths_and_flags_win(monkeypatch, tmp_path) -> None:
    from diffagent.agent.settings import Settings

    monkeypatch.setenv("DIFFAGENT_SCORING__HPS_PATH", str(tmp_path / "env.pt"))
    monkeypatch.setenv("DIFFAGENT_SCORING__CLIP_PATH", str(tmp_path / "clip.pt"))
    settings = Settings().with_overrides(
        {"scoring.hps_path": tmp_path / "flag.pt", "scoring.device": None}
    )
    config = settings.scoring
    assert config is not None
    assert config.hps_path == tmp_path / "flag.pt"
    assert config.clip_path == tmp_path / "clip.pt"
    assert config.device == "auto"


def test_cli_prints_scores_and_unified(tiny, images, tmp_path, capsys) -> None:
    paths = []
    for i, image in enumerate(images[:2]):
        paths.append(tmp_path / f"img{i}.png")
        image.save(paths[-1])
    argv = [
        "score", "--prompt", PROMPT, *map(str, paths), "--scorers", "clip,hps",
        "--clip", str(tiny["clip"]), "--clip-arch", str(tiny["clip_arch"]),
        "--hps", str(tiny["hps"]), "--hps-arch", str(tiny["hps_arch"]), "--device", "cpu",
    ]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "clip raw\tclip norm\thps raw\thps norm" in out
    assert "imagereward" not in out.split("unified metric")[0]
    assert "unified metric S(t,r) over 2 image(s)" in out
    line = next(line for line in out.splitlines() if line.startswith(str(paths[0])))
    cells = [float(cell) for cell in line.split("\t")[1:]]
    assert cells[-1] == pytest.approx((cells[1] + cells[3]) / 2, abs=1e-4)
    assert not math.isnan(cells[0])


def test_cli_missing_weights_is_a_one_line_error(tmp_path, capsys, monkeypatch) -> None:
    for var in ("DIFFAGENT_CLIP_WEIGHTS", "DIFFAGENT_HPS_WEIGHTS"):
        monkeypatch.delenv(var, raising=False)
    image = tmp_path / "a.png"
    Image.new("RGB", (8, 8)).save(image)
    assert main(["score", "--prompt", "x", str(image), "--scorers", "clip"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: CLIP ViT-B/32 weights not configured: download")
    assert main(["score", "--prompt", "x", str(image), "--scorers", "clip,nope"]) == 2
    assert "allowed: clip, imagereward, hps" in capsys.readouterr().err


def test_full_size_official_imagereward_layout_maps_exactly() -> None:
    """The real checkpoint's keys (BLIP ViT-L/16 + BERT-base) fill every parameter, shapes equal."""
    from diffagent.tools.score_imagereward import ImageRewardModel, rename_official_keys
    from diffagent.tools.testing.score_tiny import imagereward_shapes

    med = {
        "hidden_size": 768,
        "intermediate_size": 3072,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "max_position_embeddings": 512,
        "hidden_act": "gelu",
        "layer_norm_eps": 1e-12,
        "vocab_size": 30524,
    }
    shapes = imagereward_shapes(1024, 24, 16, 224, 768, 12, 3072)
    with torch.device("meta"):
        model = ImageRewardModel(med, shapes)
        official = {key: torch.empty(shape) for key, shape in shapes.items()}
    renamed = rename_official_keys(official)
    ours = model.state_dict()
    assert set(ours) == set(renamed)
    assert all(ours[key].shape == renamed[key].shape for key in ours)
    assert model.image_size == 224
    assert model.visual.config.num_attention_heads == 16


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore::FutureWarning")
def test_clip_reads_openai_torchscript_archives(tiny, tmp_path, images) -> None:
    """OpenAI ships ViT-B-32.pt as TorchScript; the same weights give the same cosines."""
    import open_clip

    from diffagent.tools.score_clip import ClipScorer, resolve_open_clip_arch

    name = resolve_open_clip_arch(str(tiny["clip_arch"]))
    model = open_clip.create_model(name, pretrained=str(tiny["clip"])).eval()
    example = (torch.zeros(1, 3, 224, 224), open_clip.get_tokenizer(name)(["a dog"]))
    archive = tmp_path / "ViT-B-32.pt"
    torch.jit.trace(model, example, check_trace=False).save(str(archive))
    from_jit = ClipScorer(archive, arch=str(tiny["clip_arch"]))
    from_state = ClipScorer(tiny["clip"], arch=str(tiny["clip_arch"]))
    assert from_jit.cosines(PROMPT, images) == pytest.approx(from_state.cosines(PROMPT, images))


def test_hps_preprocess_pads_to_square() -> None:
    from diffagent.tools.score_hps import hps_preprocess

    preprocess = hps_preprocess(224)
    for size in [(224, 160), (160, 224), (50, 300), (224, 224), (600, 400)]:
        tensor = preprocess(Image.new("RGB", size, (255, 255, 255)))
        assert tuple(tensor.shape) == (3, 224, 224)
    wide = preprocess(Image.new("RGB", (448, 224), (255, 255, 255)))
    # Resized to 224 x 112 and padded top and bottom with black (before normalisation).
    black = (0.0 - 0.48145466) / 0.26862954
    assert wide[0, 0, 0].item() == pytest.approx(black, abs=1e-4)
    assert wide[0, 112, 112].item() == pytest.approx((1.0 - 0.48145466) / 0.26862954, abs=1e-3)
