"""Every canonical A1111 sampler maps to a diffusers scheduler built from the pipeline config."""

from __future__ import annotations

import json

import diffusers
import pytest

from diffagent.samplers import CANONICAL_SAMPLERS
from diffagent.tools.pipeline_configs import packaged_config_dir
from diffagent.tools.schedulers import SCHEDULERS, make_scheduler, scheduler_spec


def _base_config(base_model: str) -> dict:
    folder = packaged_config_dir(base_model)
    return json.loads((folder / "scheduler" / "scheduler_config.json").read_text())


def test_every_canonical_sampler_is_mapped() -> None:
    assert set(SCHEDULERS) == set(CANONICAL_SAMPLERS)


@pytest.mark.parametrize("sampler", CANONICAL_SAMPLERS)
@pytest.mark.parametrize("base_model", ["SD 1.5", "SDXL 1.0"])
def test_scheduler_builds_with_its_options(sampler: str, base_model: str) -> None:
    scheduler = make_scheduler(sampler, _base_config(base_model))
    spec = scheduler_spec(sampler)
    assert type(scheduler).__name__ == spec.class_name
    assert isinstance(scheduler, getattr(diffusers, spec.class_name))
    for key, value in spec.config.items():
        assert scheduler.config[key] == value
    assert scheduler.config.get("use_karras_sigmas", False) == sampler.endswith("Karras")
    scheduler.set_timesteps(4)  # usable


def test_swapping_back_drops_previous_options() -> None:
    karras = make_scheduler("DPM++ 2M Karras", _base_config("SD 1.5"))
    plain = make_scheduler("DPM++ 2M", dict(karras.config))
    assert plain.config.use_karras_sigmas is False


def test_sde_variants() -> None:
    assert scheduler_spec("DPM++ 2M SDE Karras").config["algorithm_type"] == "sde-dpmsolver++"
    assert scheduler_spec("DPM++ SDE").class_name == "DPMSolverSDEScheduler"


def test_unknown_sampler_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="no diffusers scheduler mapping; mapped: Euler a"):
        scheduler_spec("Restart")
