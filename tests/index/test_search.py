"""Hybrid index: ranking, filters, idempotent and incremental builds, name search, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from diffagent.cards import CardFile, CardStats, ModelCard, RecommendedParams, write_cards
from diffagent.index.catalog import Catalog, starter_catalog_dir
from diffagent.index.search import CatalogIndex, default_index_dir
from diffagent.index.search.embeddings import MiniLMEmbeddingFunction
from diffagent.index.search.fusion import (
    FusionWeights,
    TuningQuery,
    candidate_features,
    evaluate,
    tune,
)
from diffagent.index.search.lexical import terms, tokenize
from diffagent.paths import user_data_dir
from diffagent.ui.cli import main

# (version_id, name, type, base, trigger words, tags, keywords, downloads)
_SPECS: list[tuple[int, str, str, str, list[str], list[str], list[str], int]] = [
    (
        101,
        "DreamShaper",
        "Checkpoint",
        "SD 1.5",
        [],
        ["fantasy", "portrait"],
        ["castle", "dragon", "knight", "magic"],
        900_000,
    ),
    (
        102,
        "Realistic Vision",
        "Checkpoint",
        "SD 1.5",
        [],
        ["photorealistic", "photo"],
        ["raw photo", "dslr", "skin pores", "film grain"],
        800_000,
    ),
    (
        103,
        "Anything V5",
        "Checkpoint",
        "SD 1.5",
        [],
        ["anime", "illustration"],
        ["1girl", "school uniform", "cherry blossoms"],
        700_000,
    ),
    (
        104,
        "Pixel Art Style",
        "LORA",
        "SD 1.5",
        ["pixelart"],
        ["pixel art", "retro"],
        ["8bit", "sprite", "game"],
        50_000,
    ),
    (
        105,
        "Ghibli Background",
        "LORA",
        "SD 1.5",
        ["ghibli style"],
        ["landscape", "anime"],
        ["meadow", "clouds", "countryside"],
        40_000,
    ),
    (
        106,
        "Juggernaut XL",
        "Checkpoint",
        "SDXL 1.0",
        [],
        ["photorealistic", "cinematic"],
        ["cinematic lighting", "bokeh", "portrait"],
        600_000,
    ),
    (
        107,
        "Cyberpunk Neon",
        "LORA",
        "SDXL 1.0",
        ["cyberpunk city"],
        ["sci-fi", "neon"],
        ["neon lights", "rain", "night city", "hologram"],
        30_000,
    ),
    (
        108,
        "Watercolor Dream",
        "LORA",
        "SD 1.5",
        ["wtrcolor"],
        ["watercolor", "painting"],
        ["paper texture", "soft colors", "flowers"],
        20_000,
    ),
    (
        109,
        "Corgi Lover",
        "LORA",
        "SDXL 1.0",
        ["corgidog"],
        ["animal", "dog"],
        ["corgi", "puppy", "fluffy"],
        10_000,
    ),
    (
        110,
        "Mecha Armor",
        "LORA",
        "SD 1.5",
        ["mechasuit"],
        ["robot", "mecha"],
        ["gundam", "armor", "mechanical"],
        15_000,
    ),
    (
        111,
        "Counterfeit V3",
        "Checkpoint",
        "SD 1.5",
        [],
        ["anime"],
        ["detailed eyes", "1girl", "flowers"],
        500_000,
    ),
    (
        112,
        "SDXL Base Landscape",
        "Checkpoint",
        "SDXL 1.0",
        [],
        ["landscape", "nature"],
        ["mountains", "lake", "sunset"],
        300_000,
    ),
]

PROMPTS: dict[int, str] = {
    101: "a brave knight fighting a dragon near a castle, magic, fantasy art",
    102: "raw photo of an old man, dslr, skin pores, film grain, photorealistic",
    104: "pixelart, a tiny hero sprite, 8bit retro game",
    105: "ghibli style, green meadow with big clouds, countryside",
    107: "cyberpunk city at night, neon lights, rain, hologram",
    108: "wtrcolor, soft colors flowers on paper texture",
    109: "corgidog, a fluffy corgi puppy on grass",
    110: "mechasuit, gundam style robot armor",
}


def make_card(version_id: int, name: str = "", **update: object) -> ModelCard:
    """One card built from the fixture table (or a minimal one), with fields overridden."""
    spec = next((s for s in _SPECS if s[0] == version_id), None)
    if spec is None:
        spec = (version_id, name or f"Model {version_id}", "LORA", "SD 1.5", [], [], [], 0)
    vid, model_name, model_type, base, triggers, tags, keywords, downloads = spec
    base_tag = "sd1" if base == "SD 1.5" else "sdxl"
    card = ModelCard(
        version_id=vid,
        model_id=vid * 10,
        air=f"urn:air:{base_tag}:{model_type.lower()}:civitai:{vid * 10}@{vid}",
        name=model_name,
        version_name="v1",
        type=model_type,  # type: ignore[arg-type]
        base_model=base,  # type: ignore[arg-type]
        trigger_words=triggers,
        tags=tags,
        keywords=keywords,
        description=f"{model_type} for {base}: {', '.join(tags + keywords)}.",
        stats=CardStats(downloads=downloads),
        file=CardFile(
            name=f"{model_name.replace(' ', '_').lower()}.safetensors",
            format="SafeTensor",
            sha256=f"{vid:064X}",
            url=f"https://civitai.com/api/download/models/{vid}",
        ),
        recommended=RecommendedParams(
            width=512, height=512, sampling_method="Euler a", sampling_steps=25, cfg_scale=7.0
        ),
    )
    return card.model_copy(update=update) if update else card


def fixture_cards() -> list[ModelCard]:
    """All fixture cards."""
    return [make_card(spec[0]) for spec in _SPECS]


def write_catalog(directory: Path, cards: list[ModelCard] | None = None, val: bool = True) -> Path:
    """Write cards.jsonl (and pairs/val.jsonl from PROMPTS) into `directory`."""
    write_cards(cards if cards is not None else fixture_cards(), directory / "cards.jsonl")
    if val:
        (directory / "pairs").mkdir(parents=True, exist_ok=True)
        with (directory / "pairs" / "val.jsonl").open("w", encoding="utf-8") as handle:
            for version_id, prompt in PROMPTS.items():
                row = {
                    "id": f"val-{version_id}",
                    "image_id": version_id,
                    "instruction": {"prompt": prompt, "negative_prompt": ""},
                    "api": {"version_id": version_id},
                }
                handle.write(json.dumps(row) + "\n")
    return directory


class CountingEmbedding(MiniLMEmbeddingFunction):
    """The real MiniLM function, counting the texts it embeds."""

    def __init__(self) -> None:
        super().__init__()
        self.texts = 0

    def embed(self, texts: list[str], *, show_progress: bool = False) -> np.ndarray:
        self.texts += len(texts)
        return super().embed(texts, show_progress=show_progress)

    def embed_queries(self, texts: list[str], *, show_progress: bool = False) -> np.ndarray:
        self.texts += len(texts)
        return super().embed_queries(texts, show_progress=show_progress)


@pytest.fixture(scope="module")
def embedding() -> CountingEmbedding:
    return CountingEmbedding()  # one model load for the whole module


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, embedding: CountingEmbedding) -> CatalogIndex:
    directory = write_catalog(tmp_path_factory.mktemp("catalog"))
    return CatalogIndex.open(directory, embedding_function=embedding)


def test_query_ranks_the_matching_card_first(built: CatalogIndex) -> None:
    top1 = {vid: built.query(prompt, k=3)[0].card.version_id for vid, prompt in PROMPTS.items()}
    assert top1 == {vid: vid for vid in PROMPTS}
    hits = built.query("a fluffy corgi puppy", k=5)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert hits[0].card.name == "Corgi Lover"
    assert hits[0].lexical_score is not None and hits[0].lexical_score > 0
    assert hits[0].dense_score is not None and 0 < hits[0].dense_score <= 1


def test_dense_channel_finds_cards_without_shared_words(built: CatalogIndex) -> None:
    hits = built.query("a little hound", k=3)  # no word in common with any card
    assert all(h.lexical_score == 0.0 for h in hits)
    assert hits[0].card.version_id == 109
    assert hits[0].dense_score is not None and hits[0].dense_score > hits[1].dense_score  # type: ignore[operator]


def test_weights_are_tuned_on_val_and_stored(built: CatalogIndex) -> None:
    stored = FusionWeights.load(built.index_dir / "fusion.json")
    assert stored.tuned_on == len(PROMPTS)
    assert stored == built.weights
    assert stored.recall_at_1 == 1.0


@pytest.mark.parametrize(
    ("base_model", "model_type"),
    [("SDXL 1.0", None), (None, "LORA"), ("sd 1.5", "checkpoint"), ("SDXL 1.0", "LORA")],
)
@pytest.mark.parametrize("selective", [0.0, 1.01])  # filter after over-fetching / in Chroma
def test_filters(
    built: CatalogIndex,
    base_model: str | None,
    model_type: str | None,
    selective: float,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("diffagent.index.search.dense.SELECTIVE_FILTER", selective)
    hits = built.query(
        "anime girl with flowers", k=12, base_model=base_model, model_type=model_type
    )
    assert hits
    for hit in hits:
        if base_model:
            assert hit.card.base_model.lower() == base_model.lower()
        if model_type:
            assert hit.card.type.lower() == model_type.lower()
    everything = {h.card.version_id for h in built.query("anime girl with flowers", k=12)}
    assert {h.card.version_id for h in hits} < everything


def test_bad_filter_lists_allowed_values(built: CatalogIndex) -> None:
    with pytest.raises(ValueError, match="allowed: SD 1.5, SDXL 1.0"):
        built.query("x", base_model="SD 2.1")
    with pytest.raises(ValueError, match="allowed: Checkpoint, LORA"):
        built.nearest_by_name("x", model_type="LyCORIS")
    with pytest.raises(ValueError, match="k must be"):
        built.query("x", k=0)


@pytest.mark.parametrize(
    ("name", "expected"),
    [("Dreemshaper", 101), ("juggernot xl", 106), ("realistic vison v1", 102), ("pixel-art", 104)],
)
def test_nearest_by_name_repairs_misspellings(
    built: CatalogIndex, name: str, expected: int
) -> None:
    hits = built.nearest_by_name(name, k=3)
    assert hits[0].card.version_id == expected
    assert hits[0].score > hits[1].score


def test_nearest_by_name_respects_filters(built: CatalogIndex) -> None:
    hits = built.nearest_by_name("Juggernaut XL", k=3, model_type="LORA")
    assert hits and all(h.card.type == "LORA" for h in hits)
    assert built.nearest_by_name("   ") == []


def test_builds_are_idempotent_and_incremental(
    tmp_path: Path, embedding: CountingEmbedding
) -> None:
    directory = write_catalog(tmp_path / "catalog", val=False)
    first = CatalogIndex.open(directory, embedding_function=embedding)
    assert first.index_dir == directory / "index"
    before = embedding.texts
    again = CatalogIndex(first.catalog, first.index_dir, embedding).build()
    assert not again.changed
    assert embedding.texts == before  # nothing re-embedded

    cards = [c for c in fixture_cards() if c.version_id != 110]  # one removed
    cards = [
        c.model_copy(update={"keywords": [*c.keywords, "zebra stripes"]})
        if c.version_id == 104
        else c
        for c in cards
    ]  # one changed
    cards.append(make_card(999, "Okapi Forest"))  # one added
    write_cards(cards, directory / "cards.jsonl")
    updated = CatalogIndex.open(directory, embedding_function=embedding)
    report = CatalogIndex(updated.catalog, updated.index_dir, embedding).build()
    assert not report.changed  # open() already synced
    assert updated.collection.count() == len(cards)
    assert embedding.texts - before == 2 + 0  # changed + added (queries not yet run)
    assert updated.query("zebra stripes", k=1)[0].card.version_id == 104
    assert updated.nearest_by_name("okapi forrest", k=1)[0].card.version_id == 999
    assert all(h.card.version_id != 110 for h in updated.query("mechasuit gundam robot", k=12))


def test_close_releases_the_embedding_thread_and_chroma(
    built: CatalogIndex, embedding: CountingEmbedding
) -> None:
    with CatalogIndex.open(built.catalog.directory, embedding_function=embedding) as index:
        assert index.query("a fluffy corgi puppy", k=1)[0].card.version_id == 109
        executor = index._executor
        assert executor is not None  # the prompt embedding ran in it
    with pytest.raises(RuntimeError, match="cannot schedule new futures after shutdown"):
        executor.submit(print)
    assert index.dense._client is None
    with pytest.raises(RuntimeError, match="closed; open it again with CatalogIndex.open"):
        index.query("a fluffy corgi puppy")
    with pytest.raises(RuntimeError, match="closed"):
        index.nearest_by_name("Corgi Lover")
    index.close()  # a second close does nothing
    assert built.query("a fluffy corgi puppy", k=1)[0].card.version_id == 109  # Chroma still open


def test_open_without_build_needs_an_index(tmp_path: Path) -> None:
    directory = write_catalog(tmp_path / "catalog", val=False)
    with pytest.raises(FileNotFoundError, match="diffagent index build --catalog"):
        CatalogIndex.open(directory, build=False)


def test_packaged_catalog_indexes_under_user_data(tmp_path: Path) -> None:
    assert default_index_dir(starter_catalog_dir()).is_relative_to(user_data_dir())
    assert default_index_dir(tmp_path) == tmp_path.resolve() / "index"


def test_tokenize_splits_prompt_syntax() -> None:
    assert tokenize("(Masterpiece:1.2), lisa_(genshin_impact), the 8bit") == [
        "masterpiece",
        "lisa",
        "genshin",
        "impact",
        "8bit",
    ]


def test_tune_follows_the_informative_channel() -> None:
    rng = np.random.default_rng(0)

    def queries(informative: int) -> list[TuningQuery]:
        out = []
        for _ in range(30):
            features = rng.random((20, 3)).astype(np.float32)
            features[:, 2] = 0.0
            target = int(rng.integers(20))
            features[target, informative] = 1.5
            out.append(TuningQuery(features=features, target=target))
        return out

    lexical_wins = tune(queries(0))
    dense_wins = tune(queries(1))
    assert lexical_wins.lexical > lexical_wins.dense
    assert dense_wins.dense > dense_wins.lexical
    assert lexical_wins.recall_at_1 == 1.0
    assert evaluate(queries(0), FusionWeights(lexical=0.0, dense=1.0))[0] < 0.5


def test_candidate_features_normalise_each_channel() -> None:
    features = candidate_features(
        np.array([4.0, 2.0, 0.0]), np.array([0.5, np.nan, 0.3]), np.array([0.1, 0.2, 0.3])
    )
    assert features[:, 0].tolist() == [1.0, 0.5, 0.0]
    assert features[:, 1].tolist() == pytest.approx([1.0, 0.0, 0.0])  # missing -> lowest


def test_cli_query_prints_json_lines(
    built: CatalogIndex, capsys: pytest.CaptureFixture[str]
) -> None:
    catalog_dir = built.catalog.directory
    args = ["index", "query", "--catalog", str(catalog_dir), "pixelart hero", "-k", "2"]
    assert main([*args, "--type", "LORA"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 2 and rows[0]["version_id"] == 104
    assert {"version_id", "model_id", "name", "score", "lexical_score", "dense_score"} <= set(
        rows[0]
    )
    assert main(["index", "build", "--catalog", str(catalog_dir)]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[0])["embedded"] == 0


@pytest.mark.slow
def test_starter_catalog_index() -> None:
    if not (starter_catalog_dir() / "cards.jsonl").is_file():
        pytest.skip("starter catalog not built yet")
    index = CatalogIndex.open_starter()
    catalog = Catalog.load(starter_catalog_dir())
    assert index.collection.count() == len(catalog)
    card = next(iter(catalog))
    assert index.nearest_by_name(card.display_name, k=1)[0].card.version_id == card.version_id
    assert len(index.query("a portrait of a woman, masterpiece", k=5)) == 5


def test_train_prompts_join_the_lexical_document_only(
    tmp_path: Path, embedding: CountingEmbedding
) -> None:
    directory = write_catalog(tmp_path / "catalog", val=False)
    index = CatalogIndex.open(directory, embedding_function=embedding)
    assert all(hit.lexical_score == 0 for hit in index.query("unicornfish", k=3))
    row = {"instruction": {"prompt": "wtrcolor unicornfish in a pond"}, "api": {"version_id": 108}}
    (directory / "pairs").mkdir()
    (directory / "pairs" / "train.jsonl").write_text(json.dumps(row) + "\n")
    before = embedding.texts
    report = CatalogIndex(index.catalog, index.index_dir, embedding).build()
    assert report.lexical_rebuilt and report.embedded == 0
    assert embedding.texts == before
    reopened = CatalogIndex.open(directory, embedding_function=embedding)
    hit = reopened.query("unicornfish", k=1)[0]
    assert hit.card.version_id == 108 and hit.lexical_score


def test_terms_add_adjacent_word_bigrams() -> None:
    assert terms("Red kimono, the girl") == [
        "red",
        "kimono",
        "girl",
        "red_kimono",
        "kimono_girl",
    ]


def test_model_prior_ranks_sibling_versions_and_dense_is_skipped_at_weight_zero(
    tmp_path: Path, embedding: CountingEmbedding
) -> None:
    cards = [
        make_card(201, "Zebra Maker", model_id=7, keywords=["zebra stripes"]),
        make_card(202, "Other Title", model_id=7),
        make_card(203, "Unrelated", model_id=8, keywords=["teapot"]),
    ]
    index = CatalogIndex.open(
        write_catalog(tmp_path, cards, val=False), embedding_function=embedding
    )
    index.weights = FusionWeights(lexical=1.0, dense=0.0, model=0.5)
    before = embedding.texts
    hits = index.query("zebra stripes", k=3)
    assert [h.card.version_id for h in hits] == [201, 202]  # the sibling, not the unrelated card
    assert hits[1].lexical_score == 0.0 and hits[1].score == pytest.approx(0.5)
    assert all(h.dense_score is None for h in hits)
    assert embedding.texts == before  # no prompt embedding when the dense weight is 0
    index.weights = FusionWeights(lexical=1.0, dense=0.0, model=0.0)
    scores = {h.card.version_id: h.score for h in index.query("zebra stripes", k=3)}
    assert scores[201] == pytest.approx(1.0) and scores.get(202, 0.0) == 0.0
    index.weights = FusionWeights(lexical=0.5, dense=0.5, model=0.0)
    assert len(index.query("zebra stripes", k=3)) == 3 and embedding.texts == before + 1
