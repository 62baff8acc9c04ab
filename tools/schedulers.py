"""A1111 sampler names -> diffusers scheduler classes and config overrides.

Follows the table in diffusers' scheduler overview ("A1111/k-diffusion" column). Some A1111
samplers have no diffusers counterpart; they map to the nearest solver, flagged `approximate`.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class SchedulerSpec(BaseModel):
    """How one A1111 sampler is reproduced with a diffusers scheduler."""

    model_config = ConfigDict(frozen=True)

    class_name: str = Field(description="diffusers scheduler class name.")
    config: dict[str, Any] = Field(default_factory=dict, description="Overrides of the config.")
    approximate: bool = Field(default=False, description="No exact diffusers counterpart.")


def _spec(class_name: str, approximate: bool = False, **config: Any) -> SchedulerSpec:
    return SchedulerSpec(class_name=class_name, config=config, approximate=approximate)


_KARRAS = {"use_karras_sigmas": True}

SCHEDULERS: dict[str, SchedulerSpec] = {
    "Euler a": _spec("EulerAncestralDiscreteScheduler"),
    "Euler": _spec("EulerDiscreteScheduler"),
    "LMS": _spec("LMSDiscreteScheduler"),
    "LMS Karras": _spec("LMSDiscreteScheduler", **_KARRAS),
    "Heun": _spec("HeunDiscreteScheduler"),
    "DPM2": _spec("KDPM2DiscreteScheduler"),
    "DPM2 a": _spec("KDPM2AncestralDiscreteScheduler"),
    "DPM2 Karras": _spec("KDPM2DiscreteScheduler", **_KARRAS),
    "DPM2 a Karras": _spec("KDPM2AncestralDiscreteScheduler", **_KARRAS),
    # diffusers: "DPM++ 2S a" has no exact counterpart; DPMSolverSinglestepScheduler is close.
    "DPM++ 2S a": _spec("DPMSolverSinglestepScheduler", approximate=True),
    "DPM++ 2S a Karras": _spec("DPMSolverSinglestepScheduler", approximate=True, **_KARRAS),
    "DPM++ 2M": _spec("DPMSolverMultistepScheduler"),
    "DPM++ 2M Karras": _spec("DPMSolverMultistepScheduler", **_KARRAS),
    "DPM++ SDE": _spec("DPMSolverSDEScheduler"),
    "DPM++ SDE Karras": _spec("DPMSolverSDEScheduler", **_KARRAS),
    "DPM++ 2M SDE": _spec("DPMSolverMultistepScheduler", algorithm_type="sde-dpmsolver++"),
    "DPM++ 2M SDE Karras": _spec(
        "DPMSolverMultistepScheduler", algorithm_type="sde-dpmsolver++", **_KARRAS
    ),
    # k-diffusion's fixed-step / adaptive DPM solvers: nearest is the third-order singlestep solver.
    "DPM fast": _spec("DPMSolverSinglestepScheduler", approximate=True, solver_order=3),
    "DPM adaptive": _spec("DPMSolverSinglestepScheduler", approximate=True, solver_order=3),
    "DDIM": _spec("DDIMScheduler"),
    "PLMS": _spec("PNDMScheduler", skip_prk_steps=True),
    "UniPC": _spec("UniPCMultistepScheduler"),
}

# Base config keys a swapped scheduler must not inherit from the checkpoint's default scheduler.
_RESET_KEYS = ("use_karras_sigmas", "algorithm_type", "solver_order", "skip_prk_steps")


def scheduler_spec(sampler: str) -> SchedulerSpec:
    """The diffusers scheduler for an A1111 sampler name; ValueError listing the mapped names."""
    if sampler not in SCHEDULERS:
        raise ValueError(
            f"sampler {sampler!r} has no diffusers scheduler mapping; "
            f"mapped: {', '.join(SCHEDULERS)}"
        )
    return SCHEDULERS[sampler]


def make_scheduler(sampler: str, base_config: dict[str, Any]) -> Any:
    """Build the diffusers scheduler for `sampler` from the pipeline's own scheduler config."""
    import diffusers

    spec = scheduler_spec(sampler)
    scheduler_class = getattr(diffusers, spec.class_name)
    config = {
        k: v for k, v in dict(base_config).items() if k not in _RESET_KEYS and not k.startswith("_")
    }
    config.update(spec.config)
    return scheduler_class.from_config(config)
