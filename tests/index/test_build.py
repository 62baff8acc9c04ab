import json
import re
from pathlib import Path

import pytest

from diffagent.api import T2IApi
from diffagent.index.builder.build import BuildConfig, build_catalog
from diffagent.index.builder.describe import CardFacts, prompt_phrases
from diffagent.index.builder.filters import DEFAULT_NSFW_TERMS, PromptGuard
from diffagent.index.builder.starter import SUGGESTIVE_TERMS, make_starter, select_starter
from diffagent.index.catalog import Catalog
from diffagent.ui.cli import main

FIXTURE = Path(__file__).parent / "fixtures" / "civitai-models.jsonl"
NSFW_IMAGES = {50003, 50004, 50010, 50020, 50021}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("catalog")
    assert main(["catalog", "build", "--civitai", str(FIXTURE), "--out", str(out), "--quiet"]) == 0
    return out


def _pairs(out: Path) -> dict[str, list[dict]]:
    return {
        name: [json.loads(line) for line in (out / "pairs" / f"{name}.jsonl").open()]
        for name in ("train", "val", "test")
    }


def test_build_writes_cards_pairs_and_stats(built: Path, capsys: pytest.CaptureFixture) -> None:
    catalog = Catalog.load(built)
    assert set(catalog.cards) == {1001, 1002, 1003, 1010, 1011, 1012, 1013}
    stats = json.loads((built / "stats.json").read_text())
    assert stats["versions"]["duplicates"] == len(catalog) == stats["cards"]
    pairs = _pairs(built)
    assert stats["pairs"] == {name: len(rows) for name, rows in pairs.items()}
    assert sum(stats["pairs"].values()) == stats["images"]["deduplicated"]


def test_every_pair_is_a_valid_api_on_a_card(built: Path) -> None:
    catalog = Catalog.load(built)
    seen: dict[int, str] = {}
    for split, rows in _pairs(built).items():
        for row in rows:
            api = T2IApi.model_validate(row["api"])
            card = catalog.get(api.version_id or -1)
            assert card is not None and api.model_id == card.model_id
            assert api.model_description == card.description
            assert row["image_id"] not in NSFW_IMAGES
            assert not re.search(r"<\s*(lora|lyco|hypernet)", row["instruction"]["prompt"], re.I)
            assert seen.setdefault(row["image_id"], split) == split
            if card.type == "LORA":
                assert api.checkpoint is not None and api.loras[0].version_id == card.version_id
                base = catalog.get(api.checkpoint.version_id)
                assert base is not None and base.type == "Checkpoint"
                assert base.base_model == card.base_model
            else:
                assert api.checkpoint is None and api.loras == []


def test_cards_are_facts_and_train_only_keywords(built: Path) -> None:
    catalog = Catalog.load(built)
    train_phrases: dict[int, set[str]] = {}
    for row in _pairs(built)["train"]:
        phrases = train_phrases.setdefault(row["api"]["version_id"], set())
        phrases.update(prompt_phrases(row["instruction"]["prompt"]))
    for card in catalog:
        assert "<" not in card.description and "HTML" not in card.description
        assert set(card.keywords) <= train_phrases.get(card.version_id, set())
        assert card.file.sha256 and card.file.url.startswith("https://")
        assert card.air.endswith(f"civitai:{card.model_id}@{card.version_id}")
    lora = catalog.get(1010)
    assert lora is not None and lora.recommended.base_checkpoint_version_id == 1001
    assert lora.recommended.lora_weight is not None
    assert lora.trigger_words == ["pixel art", "8bit"]
    xl = catalog.get(1012)
    assert xl is not None and xl.air.startswith("urn:air:sdxl:checkpoint:")


def test_build_is_deterministic(built: Path, tmp_path: Path) -> None:
    assert (
        main(["catalog", "build", "--civitai", str(FIXTURE), "--out", str(tmp_path), "--quiet"])
        == 0
    )
    for name in ("cards.jsonl", "pairs/train.jsonl", "pairs/val.jsonl", "pairs/test.jsonl"):
        assert (tmp_path / name).read_bytes() == (built / name).read_bytes()


def test_custom_rewriter_plugs_in() -> None:
    class Shouting:
        def describe(self, facts: CardFacts) -> str:
            return facts.name.upper()

    result = build_catalog([FIXTURE], BuildConfig(progress=False), rewriter=Shouting())
    assert {card.description for card in result.cards} >= {"DREAMYMIX", "PIXEL ART STYLE"}


def test_unresolved_default_and_bad_default_checkpoint() -> None:
    config = BuildConfig.model_validate(
        {"mapping": {"unresolved_base": "default"}, "progress": False}
    )
    result = build_catalog([FIXTURE], config)
    unresolved = [p for rows in result.pairs.values() for p in rows if not p["base_resolved"]]
    defaults = {"SD 1.5": 1001, "SDXL 1.0": 1012}  # the most downloaded checkpoint of each base
    assert result.stats["default_checkpoints"] == defaults
    assert len(unresolved) == 3
    for pair in unresolved:
        assert pair["api"]["checkpoint"]["version_id"] == defaults[pair["api"]["base_model"]]
    bad = BuildConfig.model_validate({"mapping": {"default_checkpoints": {"SD 1.5": 1012}}})
    with pytest.raises(ValueError, match="not a SD 1.5 checkpoint"):
        build_catalog([FIXTURE], bad)


def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = main(
        ["catalog", "build", "--civitai", str(tmp_path / "none.jsonl"), "--out", str(tmp_path)]
    )
    assert code == 2 and "none.jsonl" in capsys.readouterr().err


def test_starter_includes_the_bases_of_its_loras(built: Path, tmp_path: Path) -> None:
    assert main(["catalog", "starter", "--catalog", str(built), "--out", str(tmp_path),
                 "--max", "3", "--checkpoints", "1"]) == 0  # fmt: skip
    starter = Catalog.load(tmp_path)
    assert len(starter) == 3
    for card in starter:
        if card.type == "LORA":
            assert card.recommended.base_checkpoint_version_id in starter.cards
    summary = make_starter(built, tmp_path / "all", max_cards=500)
    assert "7 cards" in summary


def test_starter_leaves_out_and_cleans_suggestive_cards() -> None:
    result = build_catalog([FIXTURE], BuildConfig(progress=False))
    cards = {card.version_id: card for card in result.cards}
    cards[1011] = cards[1011].model_copy(update={"trigger_words": ["bikini girl"]})
    cards[1003] = cards[1003].model_copy(update={"tags": ["photorealistic", "sexy"]})
    chosen = {card.version_id: card for card in select_starter(list(cards.values()), 10, 5)}
    assert 1011 not in chosen and 1003 in chosen
    assert chosen[1003].tags == ["photorealistic"] and "sexy" not in chosen[1003].description


def test_shipped_starter_catalog_loads() -> None:
    from diffagent.index.catalog import starter_catalog_dir

    starter = Catalog.load(starter_catalog_dir())
    assert 0 < len(starter) <= 500
    types = {card.type for card in starter}
    assert types == {"Checkpoint", "LORA"}
    guard = PromptGuard(SUGGESTIVE_TERMS + DEFAULT_NSFW_TERMS)
    for card in starter:
        if card.type == "LORA":
            assert card.recommended.base_checkpoint_version_id in starter.cards
        texts = [card.name, card.description, *card.tags, *card.trigger_words, *card.keywords]
        assert not any(guard.is_explicit(text) for text in texts), card.display_name


def test_build_with_crawled_images(tmp_path: Path) -> None:
    image = {
        "id": 60001,
        "nsfw": False,
        "nsfwLevel": "None",
        "modelVersionId": 1003,
        "meta": {"prompt": "raw photo of a lighthouse at dusk", "Size": "512x512", "steps": 30},
    }
    path = tmp_path / "images.jsonl"
    path.write_text(json.dumps(image) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    args = ["catalog", "build", "--civitai", str(FIXTURE), "--images", str(path)]
    assert main([*args, "--out", str(out), "--quiet"]) == 0
    pairs = [row for rows in _pairs(out).values() for row in rows]
    assert any(row["image_id"] == 60001 and row["api"]["version_id"] == 1003 for row in pairs)
    assert json.loads((out / "stats.json").read_text())["mapping"]["images_attached"] == 1


def test_evidence_keeps_every_sfw_prompt_without_lora_tags(built: Path) -> None:
    from diffagent.index.catalog import iter_evidence

    evidence = dict(iter_evidence(built))
    catalog = Catalog.load(built)
    assert set(evidence) <= set(catalog.cards)
    images = {image_id for prompts in evidence.values() for image_id, _ in prompts}
    assert not images & NSFW_IMAGES
    pixel = dict(evidence[1010])
    # An image whose base checkpoint did not resolve (unknown hash) is evidence all the same.
    assert pixel[50018] == "pixel art, a dragon"
    assert all("<" not in prompt for prompts in evidence.values() for _, prompt in prompts)
    paired = {row["image_id"] for rows in _pairs(built).values() for row in rows}
    assert paired < images  # more evidence than pairs
    stats = json.loads((built / "stats.json").read_text())
    assert stats["evidence_prompts"] == len(images)
