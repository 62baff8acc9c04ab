from pathlib import Path

import pytest

from diffagent.index.builder.civitai import iter_models
from diffagent.index.builder.filters import (
    FilterConfig,
    SelectedVersion,
    StageCounts,
    select_versions,
)
from diffagent.index.builder.reverse_map import (
    CheckpointHashes,
    MappingConfig,
    RawPair,
    map_version,
    normalize_size,
    parse_image,
    parse_size,
    strip_extra_network_tags,
)

FIXTURE = Path(__file__).parent / "fixtures" / "civitai-models.jsonl"


@pytest.fixture(scope="module")
def selected() -> dict[int, SelectedVersion]:
    kept = select_versions(iter_models([FIXTURE]), FilterConfig(), StageCounts(), progress=False)
    return {s.version_id: s for s in kept}


def _map(
    selected: dict[int, SelectedVersion], version_id: int, config: MappingConfig
) -> tuple[dict[int, RawPair], dict[str, int]]:
    hashes = CheckpointHashes(s for s in selected.values() if s.model["type"] == "Checkpoint")
    counts: dict[str, int] = {}
    defaults = {"SD 1.5": 1003, "SDXL 1.0": 1012}
    pairs = map_version(selected[version_id], hashes, config, defaults, counts)
    return {p.image_id: p for p in pairs}, counts


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("pixel art, a corgi, <lora:pixelArt_v1:0.7>, 8bit", "pixel art, a corgi, 8bit"),
        ("<lora:a:1> <LyCO:b:0.5>a fox<hypernet:c:1>", "a fox"),
        ("<lora:asian_v2:0.8, best quality, solo", "best quality, solo"),  # unclosed tag
        ("a cat <lora:x:1>", "a cat"),
        ("no tags here", "no tags here"),
    ],
)
def test_extra_network_tags_are_stripped(raw: str, clean: str) -> None:
    assert strip_extra_network_tags(raw) == clean


def test_size_parsing_and_normalising() -> None:
    assert parse_size("512x768") == (512, 768)
    assert parse_size(" 640 X 961 ") == (640, 961)
    assert parse_size(None) is None and parse_size("big") is None
    assert normalize_size(640, 961, "SD 1.5") == (640, 960)
    assert normalize_size(4000, 30, "SD 1.5") == (2048, 64)
    assert normalize_size(4000, 1024, "SDXL 1.0") == (4000, 1024)


def test_parse_image_normalises_fields(selected: dict[int, SelectedVersion]) -> None:
    image = next(i for i in selected[1002].images if i["id"] == 50006)
    parsed = parse_image(image, "SD 1.5", "dreamyMix_v1")
    assert parsed.steps == 150 and parsed.cfg == 30.0  # clamped into the T2IApi ranges
    image = next(i for i in selected[1003].images if i["id"] == 50007)
    parsed = parse_image(image, "SD 1.5", "photoReal_v5")
    assert parsed.sampler == "DPM++ 2M Karras"  # "DPM++ 2M alt Karras"
    assert parsed.size == (640, 960)


def test_lora_base_resolution_by_hash_and_name(selected: dict[int, SelectedVersion]) -> None:
    pairs, counts = _map(selected, 1010, MappingConfig())
    assert pairs[50015].checkpoint_version_id == 1001  # lower-case AutoV2 of the primary file
    assert pairs[50016].checkpoint_version_id == 1001  # AutoV1 of a non-primary file
    assert pairs[50017].checkpoint_version_id == 1003  # no hash: file name "photoReal_v5"
    assert 50018 not in pairs  # unknown hash: dropped
    assert 50024 not in pairs  # hash of a filtered-out (nsfw) checkpoint: dropped
    assert 50022 not in pairs  # empty prompt
    assert counts["dropped_unresolved_base"] == 2 and counts["base_by_name"] == 1
    assert all(p.base_resolved for p in pairs.values())


def test_unresolved_kept_with_default_base(selected: dict[int, SelectedVersion]) -> None:
    pairs, counts = _map(selected, 1010, MappingConfig(unresolved_base="default"))
    assert pairs[50018].checkpoint_version_id == 1003
    assert pairs[50018].base_resolved is False
    assert "dropped_unresolved_base" not in counts


def test_lora_base_must_match_base_model(selected: dict[int, SelectedVersion]) -> None:
    pairs, _ = _map(selected, 1013, MappingConfig())
    assert pairs[50027].checkpoint_version_id == 1012
    assert 50028 not in pairs  # an SD 1.5 checkpoint hash on an SDXL LoRA


def test_lora_weight_and_filling(selected: dict[int, SelectedVersion]) -> None:
    pairs, counts = _map(selected, 1010, MappingConfig())
    assert pairs[50015].lora_weight == 0.7
    assert pairs[50016].lora_weight == 0.6  # its own tag, not the other LoRA's
    assert pairs[50019].lora_weight == 0.5  # from `resources`
    assert pairs[50017].lora_weight == 0.7  # unreadable tag: the version's most common weight
    assert counts["filled_lora_weight_from_model"] == 1
    assert all(p.prompt.count("<") == 0 for p in pairs.values())
    checkpoint_pairs, counts = _map(selected, 1001, MappingConfig())
    assert checkpoint_pairs[50002].sampling_method == "Euler a"  # k_euler_a
    assert (checkpoint_pairs[50002].width, checkpoint_pairs[50002].height) == (512, 768)
    assert counts["filled_size_from_model"] == 1
    assert checkpoint_pairs[50001].clip_skip == 2
    assert checkpoint_pairs[50001].checkpoint_version_id is None
