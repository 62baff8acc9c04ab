"""RRHF groups on a local Ray (1 CPU): the same groups as in-process."""

from __future__ import annotations

import pytest

from diffagent.finetune.ray_jobs import RewardSpec, build_groups_local, build_groups_ray

from .train_fixtures import pair_of, ranked_by_list

pytestmark = pytest.mark.slow  # starting a local Ray takes 20 s or more here


def test_ray_reward_actors_build_the_same_groups(catalog, catalog_dir) -> None:
    ray = pytest.importorskip("ray")
    pairs = [pair_of(v) for v in (1001, 1101, 1201, 1301)]
    order = [1001, 1002, 1101, 1201, 1301, 1401, 2001]
    ranked = ranked_by_list(catalog, order)
    spec = RewardSpec("catalog", catalog_dir)
    local = build_groups_local(pairs, catalog, ranked, None, spec.build(catalog), m=0, n=4)
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        remote = build_groups_ray(pairs, catalog, ranked, None, spec, m=0, n=4, chunk=3)
    finally:
        ray.shutdown()
    assert remote == local
    assert [g["scores"][0] for g in remote] == [1.0] * 4
