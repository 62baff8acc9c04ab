"""Ranked search: evidence rules, the evaluation index, leave-one-out, the learned ranker."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from diffagent.cards import write_cards
from diffagent.index.catalog import Catalog
from diffagent.index.search import CatalogIndex
from diffagent.index.search.embeddings import MiniLMEmbeddingFunction
from diffagent.index.search.evidence import collapse_near_duplicates, split_image_ids
from diffagent.index.search.evidence_index import EvidenceIndex
from diffagent.index.search.features import FEATURES
from diffagent.index.search.first_stage import first_stage
from diffagent.index.search.ranked import RankedSearch, split_queries
from diffagent.index.search.ranker import RankerConfig, ranking_data

from ..fakes import make_card

SUBJECTS = ["castle", "dragon", "robot", "forest", "harbor", "samurai", "koi", "comet"]
STYLES = ["zorblat", "quintrex", "vellumoss", "glimmerfax", "brontide", "sarnacle"]


def test_near_duplicates_collapse_and_distinct_prompts_stay() -> None:
    prompts = [
        (3, "a red fox in the snow, masterpiece"),
        (1, "a red fox in snow masterpiece"),  # same tokens without stopwords
        (2, "a blue whale under the sea"),
    ]
    kept = collapse_near_duplicates(prompts)
    assert kept == [(1, "a red fox in snow masterpiece"), (2, "a blue whale under the sea")]


def _catalog(tmp_path: Path) -> Path:
    """Six style models (two versions each) whose evidence prompts share a made-up style word."""
    rng = random.Random(0)
    cards, evidence, pairs = [], [], {"train": [], "val": [], "test": []}
    image = 1000
    for m, style in enumerate(STYLES):
        for v in range(2):
            version_id = 100 * (m + 1) + v
            cards.append(make_card(version_id, f"{style.title()} Mix", tags=["style"]))
            prompts = []
            for subject in rng.sample(SUBJECTS, 6):
                image += 1
                prompt = f"{style} style, a {subject}, detailed, {rng.choice(['dusk', 'dawn'])}"
                prompts.append([image, prompt])
                split = ("train", "train", "val", "test")[image % 4]
                record = {"image_id": image, "instruction": {"prompt": prompt}}
                pairs[split].append({**record, "api": {"version_id": version_id}})
            evidence.append({"version_id": version_id, "prompts": prompts})
    for card in cards:
        object.__setattr__(card, "model_id", card.version_id // 100)
    write_cards(cards, tmp_path / "cards.jsonl")
    with (tmp_path / "evidence.jsonl").open("w") as handle:
        handle.writelines(json.dumps(row) + "\n" for row in evidence)
    (tmp_path / "pairs").mkdir()
    for split, rows in pairs.items():
        with (tmp_path / "pairs" / f"{split}.jsonl").open("w") as handle:
            handle.writelines(json.dumps(row) + "\n" for row in rows)
    return tmp_path


def test_evaluation_index_leaves_the_split_images_out(tmp_path: Path) -> None:
    catalog = Catalog.load(_catalog(tmp_path))
    test_images = split_image_ids(catalog.directory, "test")
    assert test_images
    full = RankedSearch.open(catalog, tmp_path / "index")
    held_out = RankedSearch.open(catalog, tmp_path / "index-eval-test", "test")
    assert full is not None and held_out is not None
    full_images = {i for items in full.index.pool.values() for i, _ in items}
    held_images = {i for items in held_out.index.pool.values() for i, _ in items}
    assert test_images <= full_images and not test_images & held_images
    assert held_out.digest != full.digest


def test_leave_one_out_removes_the_query_image_from_its_card(tmp_path: Path) -> None:
    catalog = Catalog.load(_catalog(tmp_path))
    search = RankedSearch.open(catalog, tmp_path / "index")
    assert search is not None
    index: EvidenceIndex = search.index
    card = 0
    image_id, prompt = index.pool[index.cards[card].version_id][0]
    loo = index.leave_one_out(card, image_id)
    assert loo is not None
    assert index.prompt_row[prompt] not in set(loo.prompt_rows.tolist())
    _, with_image = first_stage(index, prompt)
    _, without = first_stage(index, prompt, loo=loo)
    assert without.prompt_max[card] < with_image.prompt_max[card]
    assert index.leave_one_out(card, 999_999) is None


@pytest.mark.filterwarnings("ignore")
def test_ranker_trains_once_and_ranks_the_style_card_first(tmp_path: Path) -> None:
    catalog_dir = _catalog(tmp_path)
    config = RankerConfig(train_queries=200, val_queries=50, rounds=30, early_stopping=10)
    catalog = Catalog.load(catalog_dir)
    folder = catalog_dir / "index-eval-test"
    with CatalogIndex(catalog, folder, MiniLMEmbeddingFunction(), exclude_split="test") as index:
        index.build(train_ranker=False)
        assert index.ranked is not None and index.ranked.ranker is None
        report = index.build(ranker_config=config)
        assert report.ranker is not None and report.ranker["train_queries"] > 20
        assert index.build(ranker_config=config).ranker is None  # up to date: no retraining
    with CatalogIndex.open(catalog_dir, build=False, exclude_split="test") as index:
        assert index.index_dir == folder and index.ranked is not None
        assert index.ranked.ranker is not None
        hits = index.query("brontide style, a lighthouse at night", k=3)
        assert hits and hits[0].card.name == "Brontide Mix"
        assert index.query("brontide style", k=3, base_model="SDXL 1.0") == []
        assert index.ranker_scores  # rank mode may fuse these scores
        _check_ranker_candidates(index, catalog)
    info = json.loads((index.index_dir / "ranker" / "ranker.json").read_text())
    assert info["features"] and info["digest"]
    scores = np.array([hit.score for hit in hits])
    assert np.all(np.diff(scores) <= 0)


def test_training_queries_find_their_evidence_embedding(tmp_path: Path) -> None:
    """A pair prompt written over several lines still gets its stored embedding (dense features)."""
    directory = _catalog(tmp_path)
    path = directory / "pairs" / "train.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for row in rows:  # Civitai prompts keep their newlines in pairs; evidence collapses them
        row["instruction"]["prompt"] = row["instruction"]["prompt"].replace(", ", ",\n", 1)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    catalog = Catalog.load(directory)
    search = RankedSearch.open(catalog, tmp_path / "index")
    assert search is not None
    queries = split_queries(catalog, "train")
    assert len(queries) == len(rows) and all("\n" not in prompt for prompt, _, _ in queries)
    assert all(prompt in search.index.prompt_row for prompt, _, _ in queries)
    data = ranking_data(search.index, queries, leave_one_out=True, show_progress=False)
    dense = data.features[:, FEATURES.index("cosine_mean")]
    assert np.all(dense[data.labels == 2] > 0)


def _check_ranker_candidates(index: CatalogIndex, catalog: Catalog) -> None:
    """The planner's candidates: the ranker's top cards, one version per model, scored."""
    from diffagent.finetune.candidates import ranker_source, ranker_top, ranker_train_images
    from diffagent.finetune.data import read_pairs

    assert index.ranked is not None
    train = split_queries(catalog, "train")
    (cards, scores), *_ = ranker_top(index.ranked, train[:5], 4, leave_one_out=True)
    assert len({card.model_id for card in cards}) == len(cards) == 4
    assert scores == sorted(scores, reverse=True)
    both, _ = ranker_top(index.ranked, train[:1], 4, leave_one_out=True, distinct_models=False)[0]
    assert len({card.model_id for card in both}) < 4  # both versions of the style model
    pair = read_pairs(catalog.directory, "train")[0]
    picked = ranker_source(index, 3)(pair)
    assert catalog.cards[pair.version_id].model_id == picked[0].model_id
    seen = ranker_train_images(index)
    assert seen and seen <= {image for _, _, image in train}
