from pathlib import Path

import pytest

from diffagent.index.builder.civitai import iter_models
from diffagent.index.builder.filters import FilterConfig, PromptGuard, StageCounts, select_versions

FIXTURE = Path(__file__).parent / "fixtures" / "civitai-models.jsonl"


def _select(**overrides: object) -> tuple[dict[int, list[int]], StageCounts]:
    counts = StageCounts()
    config = FilterConfig(**overrides)  # type: ignore[arg-type]
    kept = select_versions(iter_models([FIXTURE]), config, counts, progress=False)
    return {s.version_id: [int(i["id"]) for i in s.images] for s in kept}, counts


def test_default_stages_and_counts() -> None:
    kept, counts = _select()
    assert set(kept) == {1001, 1002, 1003, 1010, 1011, 1012, 1013}
    assert list(counts.versions) == [
        "input", "type", "base_model", "nsfw_model", "availability", "quality", "duplicates",
    ]  # fmt: skip
    assert list(counts.versions.values()) == [13, 12, 11, 10, 9, 8, 7]
    # counts never grow from one stage to the next
    for table in (counts.models, counts.versions, counts.images):
        values = list(table.values())
        assert values == sorted(values, reverse=True)


def test_image_level_nsfw_and_prompt_guard() -> None:
    kept, counts = _select()
    assert 50003 not in kept[1001]  # rated None, explicit prompt
    assert 50004 not in kept[1001]  # rated Soft
    assert 50020 not in kept[1010] and 50021 not in kept[1010]
    assert counts.images["nsfw_image"] - counts.images["prompt_guard"] == 2
    kept, _ = _select(prompt_guard=False, image_nsfw=["None", "Soft"])
    assert {50003, 50004} <= set(kept[1001])


def test_model_level_switches() -> None:
    assert 1005 in _select(allow_nsfw_models=True)[0]
    assert 1004 in _select(formats=["SafeTensor", "PickleTensor"])[0]
    assert 1011 not in _select(allow_poi=False)[0]
    assert 1006 in _select(min_model_downloads=0)[0]
    assert set(_select(min_version_downloads=10000)[0]) == {1001, 1003, 1010}
    assert set(_select(base_models=["SDXL 1.0"])[0]) == {1012, 1013}
    assert set(_select(types=["LORA"])[0]) == {1010, 1011, 1013}


def test_duplicate_files_keep_the_most_downloaded_version() -> None:
    kept, counts = _select(min_model_downloads=0)
    assert 1001 in kept and 1007 not in kept  # 1007 re-uploads 1001's file
    assert 1007 in _select(min_model_downloads=0, dedupe_files=False)[0]
    assert counts.versions["quality"] - counts.versions["duplicates"] == 1


def test_bad_choices_are_one_line_errors_listing_allowed() -> None:
    with pytest.raises(ValueError, match="allowed: Checkpoint, LORA"):
        FilterConfig(types=["Hypernetwork"])
    with pytest.raises(ValueError, match="allowed: SD 1.5, SDXL 1.0"):
        FilterConfig(base_models=["SD 2.1"])
    with pytest.raises(ValueError, match="PickleTensor"):
        FilterConfig(formats=["zip"])


@pytest.mark.parametrize(
    ("prompt", "explicit"),
    [
        ("(nude:1.2), woman", True),
        ("1girl, exposed_breasts, beach", True),
        ("NSFW, girl", True),
        ("a nudibranch in the sea", False),  # whole words only
        ("sussex countryside, cocktail bar", False),
        ("a cat wearing a hat", False),
    ],
)
def test_prompt_guard(prompt: str, explicit: bool) -> None:
    assert PromptGuard(FilterConfig().nsfw_terms).is_explicit(prompt) is explicit
    assert PromptGuard([]).is_explicit(prompt) is False


@pytest.mark.parametrize(
    ("field", "value"),
    [("name", "Doggy Style Sex | Sex Lora"), ("tags", ["style", "nsfw"])],
)
def test_explicit_model_names_and_tags_are_dropped(field: str, value: object) -> None:
    models = {m["id"]: m for m in iter_models([FIXTURE])}
    models[109][field] = value
    kept = select_versions(models.values(), FilterConfig(), StageCounts(), progress=False)
    assert 1010 not in {s.version_id for s in kept}
    models[109]["modelVersions"][0]["trainedWords"] = ["naked apron"]
    models[109][field] = "Pixel Art" if field == "name" else []
    kept = select_versions(models.values(), FilterConfig(), StageCounts(), progress=False)
    assert 1010 not in {s.version_id for s in kept}
    kept = select_versions(
        models.values(), FilterConfig(prompt_guard=False), StageCounts(), progress=False
    )
    assert 1010 in {s.version_id for s in kept}


def test_checkpoint_tags_do_not_drop_it() -> None:
    models = {m["id"]: m for m in iter_models([FIXTURE])}
    models[102]["tags"] = ["photorealistic", "nsfw"]  # a general-purpose checkpoint
    kept = select_versions(models.values(), FilterConfig(), StageCounts(), progress=False)
    assert 1003 in {s.version_id for s in kept}
    models[102]["name"] = "PhotoReal NSFW"
    kept = select_versions(models.values(), FilterConfig(), StageCounts(), progress=False)
    assert 1003 not in {s.version_id for s in kept}
