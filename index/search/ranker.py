"""The learned second stage: LightGBM lambdarank over (query, candidate) features.

Trained on a catalog's train pairs with each query's own image left out of its card's evidence,
early-stopped on val pairs; labels are 2 for the exact version, 1 for another version of the
same model, 0 otherwise. The model is a small text file in the index folder.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from tqdm import tqdm

from diffagent.index.search.evidence_index import EvidenceIndex
from diffagent.index.search.features import FEATURES, compute_features
from diffagent.index.search.first_stage import first_stage

RANKER_FILE = "ranker.txt"
RANKER_INFO_FILE = "ranker.json"


class RankerConfig(BaseModel):
    """How the ranker is trained."""

    model_config = ConfigDict(extra="forbid")

    train_queries: int = Field(default=8000, ge=10, description="Train pairs sampled as queries.")
    val_queries: int = Field(default=1000, ge=10, description="Val pairs for early stopping.")
    rounds: int = Field(default=600, ge=1, description="At most this many trees.")
    early_stopping: int = Field(default=50, ge=1, description="Stop after this many flat rounds.")
    learning_rate: float = Field(default=0.05, gt=0)
    num_leaves: int = Field(default=31, ge=2)
    threads: int = Field(default=2, ge=1)
    seed: int = 0
    features: tuple[str, ...] = Field(default=FEATURES, description="Feature names used.")


@dataclass
class RankingData:
    """Feature rows of many queries, grouped per query, with graded labels."""

    features: np.ndarray
    labels: np.ndarray
    groups: np.ndarray
    candidates: list[np.ndarray]


def ranking_data(
    index: EvidenceIndex,
    queries: Sequence[tuple[str, int, int]],
    *,
    leave_one_out: bool,
    desc: str = "features",
    show_progress: bool = True,
    vectors: np.ndarray | None = None,
) -> RankingData:
    """Features and labels of (prompt, version id, image id) queries over their candidates.

    `vectors` are the queries' embeddings; without them a query that is a pool prompt uses that
    prompt's stored vector (training queries are), others get no dense features.
    """
    row_of = {card.version_id: row for row, card in enumerate(index.cards)}
    model_ids = np.asarray([card.model_id for card in index.cards])
    version_ids = np.asarray([card.version_id for card in index.cards])
    blocks, labels, groups, candidates = [], [], [], []
    for position, (prompt, version_id, image_id) in enumerate(
        tqdm(queries, desc=desc, unit="query", disable=not show_progress)
    ):
        row = row_of.get(version_id)
        loo = index.leave_one_out(row, image_id) if leave_one_out and row is not None else None
        rows, state = first_stage(index, prompt, loo=loo)
        vector = vectors[position] if vectors is not None else _pool_vector(index, prompt)
        blocks.append(compute_features(index, prompt, rows, state, vector))
        true_model = model_ids[row] if row is not None else -1
        labels.append(
            np.where(
                version_ids[rows] == version_id, 2, np.where(model_ids[rows] == true_model, 1, 0)
            )
        )
        groups.append(len(rows))
        candidates.append(rows)
    width = len(FEATURES)
    return RankingData(
        features=np.vstack(blocks) if blocks else np.zeros((0, width), np.float32),
        labels=np.concatenate(labels) if labels else np.zeros(0, np.int64),
        groups=np.asarray(groups, np.int64),
        candidates=candidates,
    )


def _pool_vector(index: EvidenceIndex, prompt: str) -> np.ndarray | None:
    """The stored embedding of a pool prompt, or None."""
    row = index.prompt_row.get(prompt)
    if index.prompt_vectors is None or row is None:
        return None
    return np.asarray(index.prompt_vectors[row])


def train_ranker(train: RankingData, val: RankingData, config: RankerConfig) -> Any:
    """A LightGBM lambdarank booster, early-stopped on `val` (NDCG@1)."""
    import lightgbm as lgb

    columns = [FEATURES.index(name) for name in config.features]
    train_set = lgb.Dataset(
        train.features[:, columns],
        train.labels,
        group=train.groups,
        feature_name=list(config.features),
        free_raw_data=False,
    )
    val_set = lgb.Dataset(
        val.features[:, columns], val.labels, group=val.groups, reference=train_set
    )
    params = {
        "objective": "lambdarank",
        "metric": "ndcg",
        "ndcg_eval_at": [1],
        "learning_rate": config.learning_rate,
        "num_leaves": config.num_leaves,
        "min_data_in_leaf": 50,
        "feature_fraction": 0.8,
        "bagging_fraction": 0.8,
        "bagging_freq": 1,
        "lambdarank_truncation_level": 20,
        "label_gain": [0, 1, 1.5],
        "num_threads": config.threads,
        "seed": config.seed,
        "verbose": -1,
    }
    return lgb.train(
        params,
        train_set,
        config.rounds,
        valid_sets=[val_set],
        callbacks=[lgb.early_stopping(config.early_stopping, verbose=False)],
    )


class Ranker:
    """A trained booster and the feature names it reads."""

    def __init__(self, booster: Any, features: Sequence[str]) -> None:
        self.booster = booster
        self.features = tuple(features)
        self._columns = [FEATURES.index(name) for name in self.features]

    def score(self, features: np.ndarray) -> np.ndarray:
        """Scores of candidate rows (higher is better)."""
        if not len(features):
            return np.zeros(0)
        return np.asarray(self.booster.predict(features[:, self._columns], num_threads=1))

    def save(self, directory: Path, info: dict[str, Any]) -> None:
        """Write `ranker.txt` (the model) and `ranker.json` (features, training facts)."""
        directory.mkdir(parents=True, exist_ok=True)
        self.booster.save_model(str(directory / RANKER_FILE))
        record = {"features": list(self.features), **info}
        (directory / RANKER_INFO_FILE).write_text(json.dumps(record, indent=2), encoding="utf-8")

    @classmethod
    def load(cls, directory: Path) -> Ranker | None:
        """The ranker saved in `directory`, or None when there is none."""
        model, info = directory / RANKER_FILE, directory / RANKER_INFO_FILE
        if not model.is_file() or not info.is_file():
            return None
        import lightgbm as lgb

        features = json.loads(info.read_text(encoding="utf-8"))["features"]
        return cls(lgb.Booster(model_file=str(model)), features)


def sample_queries(
    pairs: Sequence[tuple[str, int, int]], limit: int, seed: int
) -> list[tuple[str, int, int]]:
    """A seeded sample of at most `limit` queries."""
    pairs = list(pairs)
    return random.Random(seed).sample(pairs, limit) if len(pairs) > limit else pairs


def fit_ranker(
    index: EvidenceIndex,
    train_pairs: Sequence[tuple[str, int, int]],
    val_pairs: Sequence[tuple[str, int, int]],
    config: RankerConfig,
    *,
    show_progress: bool = True,
) -> tuple[Ranker, dict[str, Any]]:
    """Build the training data (leave-one-out), train, and report how long each part took."""
    started = time.perf_counter()
    train = ranking_data(
        index,
        sample_queries(train_pairs, config.train_queries, config.seed),
        leave_one_out=True,
        desc="ranker features (train)",
        show_progress=show_progress,
    )
    val = ranking_data(
        index,
        sample_queries(val_pairs, config.val_queries, config.seed),
        leave_one_out=True,
        desc="ranker features (val)",
        show_progress=show_progress,
    )
    features_s = time.perf_counter() - started
    booster = train_ranker(train, val, config)
    info = {
        "train_queries": int(len(train.groups)),
        "val_queries": int(len(val.groups)),
        "trees": int(booster.best_iteration or booster.current_iteration()),
        "features_seconds": round(features_s, 1),
        "train_seconds": round(time.perf_counter() - started - features_s, 1),
    }
    return Ranker(booster, config.features), info
