"""RRHF groups at scale: candidates per prompt on the driver, rewards on Ray actors.

The reward travels as a small spec (name, catalog folder, seeds, weight settings) and each actor
builds its own reward once (models, score cache), so nothing heavy is pickled. Locally the same
steps run in-process. Ray is started by the caller (`ray.init(...)`) or on first use.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from diffagent.cards import ModelCard
from diffagent.finetune.candidates import Sampler, build_group, candidate_cards
from diffagent.finetune.data import CandidateSource, Pair
from diffagent.finetune.rewards import Reward, make_reward
from diffagent.index.catalog import Catalog


@dataclass(frozen=True)
class RewardSpec:
    """What a worker needs to build the reward: plain, picklable settings."""

    name: str
    catalog_dir: Path
    seeds: int = 2
    generation: Any = None  # tools.generate.GenerationConfig for `unified`
    scoring: Any = None  # tools.scoring.ScoringConfig (with cache_path) for `unified`

    def build(self, catalog: Catalog | None = None) -> Reward:
        """The reward, with its generator and cached scorer where it needs them."""
        catalog = catalog or Catalog.load(self.catalog_dir)
        generator = scorer = None
        if self.name == "unified" and self.generation is not None and self.scoring is not None:
            from diffagent.tools.generate import Generator
            from diffagent.tools.scoring import UnifiedScorer

            generator, scorer = Generator(self.generation), UnifiedScorer(self.scoring)
        return make_reward(self.name, catalog, generator=generator, scorer=scorer, seeds=self.seeds)


def pair_candidates(
    pairs: list[Pair],
    catalog: Catalog,
    ranked: CandidateSource,
    sampler: Sampler | None,
    m: int,
    n: int,
) -> list[list[ModelCard]]:
    """N candidate cards per pair: the default, m resolved samples, the ranker's cards."""
    rows = []
    for pair in tqdm(pairs, desc="candidates", unit="prompt"):
        samples = sampler(pair, m) if sampler is not None and m > 0 else []
        cards, _ = candidate_cards(pair, catalog, ranked(pair), samples, n)
        rows.append(cards)
    return rows


def build_groups_local(
    pairs: list[Pair],
    catalog: Catalog,
    ranked: CandidateSource,
    sampler: Sampler | None,
    reward: Reward,
    *,
    m: int,
    n: int,
) -> list[dict[str, Any]]:
    """RRHF groups in this process."""
    cards = pair_candidates(pairs, catalog, ranked, sampler, m, n)
    return [
        build_group(pair, row, reward.score(pair, row))
        for pair, row in tqdm(list(zip(pairs, cards, strict=True)), desc="rewards")
    ]


def _actor_class() -> Any:
    import ray

    @ray.remote
    class RewardActor:
        """Holds one reward (its models and score cache) and scores chunks of groups."""

        def __init__(self, spec: RewardSpec) -> None:
            self.catalog = Catalog.load(spec.catalog_dir)
            self.reward = spec.build(self.catalog)

        def score(self, chunk: list[tuple[Pair, list[int]]]) -> list[list[float]]:
            out = []
            for pair, ids in chunk:
                cards = [c for i in ids if (c := self.catalog.get(i)) is not None]
                out.append(self.reward.score(pair, cards))
            return out

    return RewardActor


def build_groups_ray(
    pairs: list[Pair],
    catalog: Catalog,
    ranked: CandidateSource,
    sampler: Sampler | None,
    spec: RewardSpec,
    *,
    m: int,
    n: int,
    actors: int = 1,
    chunk: int = 16,
    init: Callable[[], Any] | None = None,
) -> list[dict[str, Any]]:
    """RRHF groups with rewards computed by `actors` Ray actors, `chunk` groups per call."""
    import ray

    if not ray.is_initialized():
        (init or (lambda: ray.init(include_dashboard=False)))()
    cards = pair_candidates(pairs, catalog, ranked, sampler, m, n)
    pool = [_actor_class().remote(spec) for _ in range(max(1, actors))]
    work = [(pair, [c.version_id for c in row]) for pair, row in zip(pairs, cards, strict=True)]
    chunks = [work[i : i + chunk] for i in range(0, len(work), chunk)]
    futures = [pool[i % len(pool)].score.remote(piece) for i, piece in enumerate(chunks)]
    scores = [s for result in ray.get(futures) for s in result]
    return [
        build_group(pair, row, score) for pair, row, score in zip(pairs, cards, scores, strict=True)
    ]
