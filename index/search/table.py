"""Per-card arrays in lexical index row order: filter metadata, popularity prior, model groups."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from diffagent.index.catalog import Catalog


@dataclass(frozen=True)
class CardTable:
    """What query time needs of each card, one entry per lexical index row."""

    ids: np.ndarray
    """Version id of each row."""
    present: np.ndarray
    """Whether the row's card is in the catalog (an index can be older than its catalog)."""
    base: np.ndarray
    type: np.ndarray
    popularity: np.ndarray
    """log1p(downloads) scaled to [0, 1]."""
    row: dict[int, int]
    """Row of each version id."""
    model_order: np.ndarray
    """Rows grouped by model id: scores gathered in this order are reduced per model."""
    model_starts: np.ndarray
    model_group: np.ndarray
    """Group (position in `model_starts`) of each row."""

    @classmethod
    def build(cls, catalog: Catalog, ids: np.ndarray) -> CardTable:
        """The table of the cards with these version ids (the lexical index's rows)."""
        cards = [catalog.get(int(i)) for i in ids]
        downloads = np.array([card.stats.downloads if card else 0 for card in cards], np.float64)
        logs = np.log1p(downloads)
        top = float(logs.max(initial=0.0))
        models = np.array([card.model_id if card else -1 - i for i, card in enumerate(cards)])
        model_order = np.argsort(models, kind="stable")
        sorted_models = models[model_order]
        model_starts = np.flatnonzero(
            np.r_[True, sorted_models[1:] != sorted_models[:-1]] if len(models) else []
        )
        model_group = np.zeros(len(models), dtype=np.int64)
        if len(models):
            model_group[model_order] = np.cumsum(
                np.r_[False, sorted_models[1:] != sorted_models[:-1]]
            )
        return cls(
            ids=ids,
            present=np.array([card is not None for card in cards], dtype=bool),
            base=np.array([card.base_model if card else "" for card in cards], dtype=object),
            type=np.array([card.type if card else "" for card in cards], dtype=object),
            popularity=(logs / top if top > 0 else logs).astype(np.float32),
            row={int(i): row for row, i in enumerate(ids)},
            model_order=model_order,
            model_starts=model_starts,
            model_group=model_group,
        )

    def mask(self, base_model: str | None, model_type: str | None) -> np.ndarray:
        """Rows allowed by the filters (canonical spellings; None = any)."""
        mask = self.present.copy()
        if base_model:
            mask &= self.base == base_model
        if model_type:
            mask &= self.type == model_type
        return mask

    def model_max(self, scores: np.ndarray) -> np.ndarray:
        """For each row, the highest score among the rows of the same model."""
        if not len(scores):
            return np.zeros(0, dtype=np.float32)
        best = np.maximum.reduceat(scores[self.model_order], self.model_starts)
        return best[self.model_group]
