"""RRHF: the loss by hand, groups never mixed, run-time p_i, candidates, rewards, 3-step smoke."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffagent.agent import prompts
from diffagent.agent.llm_embedded import EmbeddedBackend
from diffagent.finetune.candidates import candidate_cards, model_part, model_sampler
from diffagent.finetune.data import check_groups
from diffagent.finetune.ray_jobs import build_groups_local
from diffagent.finetune.rewards import CatalogReward, UnifiedReward, make_reward
from diffagent.finetune.rrhf import (
    GroupCollator,
    RRHFRunConfig,
    build_rrhf_trainer,
    group_loss,
    response_logps,
)
from diffagent.finetune.sft import load_base, lora_config

from .train_fixtures import pair_of, ranked_by_list

NO_CACHE = {"cache_path": None}
ORDER = [1001, 1002, 1101, 1201, 1301, 1401, 2001]


def test_group_loss_is_hinge_over_ordered_pairs_plus_best_ce() -> None:
    logps = torch.tensor([-2.0, -6.0, -3.0])
    lengths = torch.tensor([2, 3, 1])  # p = [-1, -2, -3]
    scores = torch.tensor([0.0, 1.0, 0.3])
    total, rank, ce = group_loss(logps, lengths, scores)
    # Pairs s_i < s_j: (0,1): max(0,-1+2)=1; (0,2): max(0,-1+3)=2; (2,1): max(0,-3+2)=0.
    assert rank.item() == pytest.approx(3.0)
    assert ce.item() == pytest.approx(2.0)  # -p of the best (index 1)
    assert total.item() == pytest.approx(5.0)
    tied, rank_tied, _ = group_loss(logps, lengths, torch.ones(3))
    assert rank_tied.item() == 0.0


@pytest.fixture(scope="module")
def policy(tiny_planner):
    from peft import get_peft_model

    model, tokenizer = load_base(tiny_planner, threads=1)
    model = get_peft_model(model, lora_config(RRHFRunConfig(catalog=".", out=".").lora, 2))
    return model, tokenizer


@pytest.fixture(scope="module")
def groups(catalog, policy):
    model, tokenizer = policy
    torch.manual_seed(0)
    pairs = [pair_of(v) for v in (1001, 1201, 1401)]
    sampler = model_sampler(model, tokenizer, "rank")
    return build_groups_local(
        pairs, catalog, ranked_by_list(catalog, ORDER), sampler, CatalogReward(catalog), m=2, n=5
    )


def test_groups_hold_n_distinct_validated_responses_with_catalog_rewards(groups, catalog) -> None:
    assert check_groups(groups) == 5
    for group in groups:
        assert len(set(group["version_ids"])) == 5
        assert group["version_ids"][0] == group["truth"]  # the default: the ranker's first
        assert group["scores"][0] == 1.0
        truth = catalog.get(group["truth"])
        for version_id, score, text in zip(
            group["version_ids"], group["scores"], group["responses"], strict=True
        ):
            card = catalog.get(version_id)
            assert text == prompts.render_rank_candidate(card, 512, 768) or "SDXL" in text
            if version_id != truth.version_id and card.model_id == truth.model_id:
                assert score == 0.7


def test_model_part_keeps_only_the_model_and_repair_completes_it(catalog) -> None:
    assert model_part("PaintDream | castle, art | portrait", "rank") == {"model": "PaintDream"}
    assert model_part("Ghibli Style (LoRA) | ghibli style | square", "rank") == {
        "model": "Ghibli Style"
    }
    assert model_part('{"model": "AnimeMix", "version_id": 1101, "width": 9}', "generate") == {
        "model": "AnimeMix",
        "version_id": 1101,
    }
    pair = pair_of(1201)
    samples = ["PaintDreem | castle | portrait", "no such model at all | x | square"]
    cards, hallucinated = candidate_cards(pair, catalog, [catalog.get(1201)], samples, 4)
    assert [c.version_id for c in cards][:1] == [1201]
    assert len({c.version_id for c in cards}) == 4
    assert hallucinated >= 1


def test_first_stage_source_finds_the_card_with_its_own_image_left_out(catalog) -> None:
    from diffagent.finetune.candidates import first_stage_source

    source = first_stage_source(catalog, k=3)
    for version_id in (1201, 1301, 1401):
        cards = source(pair_of(version_id))
        assert 1 <= len(cards) <= 3
        assert cards[0].version_id == version_id


def test_catalog_reward_levels(catalog) -> None:
    reward = make_reward("catalog", catalog)
    cards = [catalog.get(v) for v in (1001, 1002, 2001, 1101)]
    # 1002 is another version of model 100; XL Photo shares a style tag; AnimeMix nothing.
    assert reward.score(pair_of(1001), cards) == [1.0, 0.7, 0.3, 0.0]
    with pytest.raises(ValueError, match="allowed"):
        make_reward("vibes", catalog)


def test_shared_prompt_logps_equal_full_sequences_and_run_time_scores(
    groups, policy, tiny_planner
) -> None:
    model, tokenizer = policy
    model.eval()
    batch = GroupCollator(tokenizer)(groups[:1])
    prompt, responses = batch["prompt_ids"][0], batch["response_ids"][0]
    with torch.no_grad():
        shared, lengths = response_logps(model, prompt, responses, share_prompt=True)
        full, _ = response_logps(model, prompt, responses, share_prompt=False)
    assert torch.allclose(shared, full, atol=1e-4)
    # p_i is what rank mode scores at run time (the embedded planner, same weights, no adapter
    # change yet: the LoRA starts at zero).
    backend = EmbeddedBackend(tiny_planner, dtype="float32")
    run_time = backend.score_continuations(groups[0]["prompt"], groups[0]["responses"])
    assert np.allclose((shared / lengths).numpy(), run_time, atol=1e-4)


def test_batch_of_two_groups_equals_two_single_group_losses(
    groups, policy, catalog_dir, tmp_path: Path
) -> None:
    model, tokenizer = policy
    config = RRHFRunConfig(catalog=catalog_dir, out=tmp_path, batch_size=2, max_steps=1)
    trainer = build_rrhf_trainer(config, groups, model, tokenizer)
    collate = trainer.data_collator
    model.eval()
    with torch.no_grad():
        both, _, _ = trainer.batch_loss(model, collate(groups[:2]))
        one, _, _ = trainer.batch_loss(model, collate(groups[:1]))
        two, _, _ = trainer.batch_loss(model, collate(groups[1:2]))
    assert both.item() == pytest.approx((one.item() + two.item()) / 2, rel=1e-5)


def test_rrhf_smoke_three_steps_changes_the_adapter(
    groups, catalog_dir, tiny_planner, tmp_path: Path
) -> None:
    model, tokenizer = load_base(tiny_planner, threads=1)
    config = RRHFRunConfig(
        catalog=catalog_dir, out=tmp_path, batch_size=2, max_steps=3, save_steps=3, lr=1e-2
    )
    trainer = build_rrhf_trainer(config, groups, model, tokenizer, lora_config(config.lora, 2))
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_" in n}
    result = trainer.train()
    assert math.isfinite(result.training_loss)
    after = dict(trainer.model.named_parameters())
    assert any(not torch.equal(before[n], after[n].detach()) for n in before)
    logged = [row for row in trainer.state.log_history if "rank_loss" in row]
    assert logged and all(math.isfinite(row["rank_loss"]) for row in logged)


class CountingGenerator:
    """Stands in for tools.generate: seeded random images, counted."""

    def __init__(self) -> None:
        self.calls = 0

    def generate(self, api, seeds, checkpoint, loras=None):  # noqa: ANN001, ANN201
        self.calls += 1
        return [
            Image.fromarray(
                np.random.default_rng(seed + api.version_id).integers(
                    0, 256, (64, 64, 3), dtype=np.uint8
                )
            )
            for seed in seeds
        ]


def test_unified_reward_generates_and_scores_each_response_once(
    catalog, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from diffagent.tools.scoring import ScoringConfig, UnifiedScorer
    from diffagent.tools.testing.score_tiny import make_tiny_scorer_weights

    weights = make_tiny_scorer_weights(tmp_path_factory.mktemp("tiny-scorers"))
    config = ScoringConfig.from_tiny(weights, cache_path=tmp_path_factory.mktemp("c") / "s.db")
    generator = CountingGenerator()
    reward = UnifiedReward(catalog, generator, UnifiedScorer(config), seeds=2)
    cards = [catalog.get(v) for v in (1001, 1201)]
    first = reward.score(pair_of(1001), cards)
    assert generator.calls == 2 and reward.generated == 4
    assert all(0.0 <= s <= 1.0 for s in first)
    # A fresh reward over the same cache: nothing generated, nothing scored, same values.
    again = UnifiedReward(catalog, generator, UnifiedScorer(config), seeds=2)
    assert again.score(pair_of(1001), cards) == pytest.approx(first)
    assert generator.calls == 2 and again.generated == 0
    with pytest.raises(ValueError, match="cache"):
        UnifiedReward(
            catalog, generator, UnifiedScorer(config.model_copy(update={"cache_path": None}))
        )


def test_with_gold_puts_the_pairs_card_among_the_ranker_cards(catalog) -> None:
    from diffagent.finetune.candidates import top_cards, with_gold

    others = [catalog.get(v) for v in (1301, 2001, 1101)]
    source = with_gold(lambda pair: list(others), catalog, 3)
    cards = source(pair_of(1201))
    assert [c.version_id for c in cards] == [1301, 2001, 1201]  # replaces the last
    assert [c.version_id for c in source(pair_of(2001))] == [1301, 2001, 1101]  # already there
    # one version per model: 1001 and 1002 are versions of model 100
    two = top_cards([catalog.get(v) for v in (1001, 1002, 2001)], 3)
    assert [c.version_id for c in two] == [1001, 2001]
    assert len(top_cards([catalog.get(v) for v in (1001, 1002)], 3, distinct_models=False)) == 2
