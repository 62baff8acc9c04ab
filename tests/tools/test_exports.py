"""Exports checked against their consumers' documented fields and node types."""

from __future__ import annotations

import ast
import json

import diffusers
import pytest

from diffagent.api import CheckpointRef, LoraRef, T2IApi
from diffagent.samplers import CANONICAL_SAMPLERS
from diffagent.tools.exports import (
    COMFYUI_SAMPLERS,
    a1111_infotext,
    export_text,
    to_a1111_payload,
    to_comfyui_workflow,
    to_diffusers_code,
)

# A1111/Forge StableDiffusionTxt2ImgProcessingAPI request fields (the /docs schema).
A1111_TXT2IMG_FIELDS = {
    "prompt", "negative_prompt", "styles", "seed", "subseed", "subseed_strength",
    "seed_resize_from_h", "seed_resize_from_w", "sampler_name", "scheduler", "batch_size",
    "n_iter", "steps", "cfg_scale", "width", "height", "restore_faces", "tiling",
    "do_not_save_samples", "do_not_save_grid", "eta", "denoising_strength", "s_min_uncond",
    "s_churn", "s_tmax", "s_tmin", "s_noise", "override_settings",
    "override_settings_restore_afterwards", "refiner_checkpoint", "refiner_switch_at",
    "disable_extra_networks", "comments", "enable_hr", "firstphase_width", "firstphase_height",
    "hr_scale", "hr_upscaler", "hr_second_pass_steps", "hr_resize_x", "hr_resize_y",
    "hr_checkpoint_name", "hr_sampler_name", "hr_scheduler", "hr_prompt", "hr_negative_prompt",
    "force_task_id", "sampler_index", "script_name", "script_args", "send_images", "save_images",
    "alwayson_scripts", "infotext",
}  # fmt: skip
# A1111 >= 1.9 sampler and scheduler labels (modules/sd_samplers*.py, sd_schedulers.py).
A1111_SAMPLERS = {
    "DPM++ 2M", "DPM++ SDE", "DPM++ 2M SDE", "DPM++ 2M SDE Heun", "DPM++ 2S a", "DPM++ 3M SDE",
    "Euler a", "Euler", "LMS", "Heun", "DPM2", "DPM2 a", "DPM fast", "DPM adaptive", "Restart",
    "DDIM", "DDIM CFG++", "PLMS", "UniPC", "LCM",
}  # fmt: skip
A1111_SCHEDULERS = {"Automatic", "Uniform", "Karras", "Exponential", "Polyexponential",
                    "SGM Uniform", "KL Optimal", "Align Your Steps", "Simple", "Normal", "DDIM",
                    "Beta"}  # fmt: skip
# ComfyUI node inputs (nodes.py INPUT_TYPES) and KSampler choices (comfy/samplers.py).
COMFY_INPUTS = {
    "CheckpointLoaderSimple": {"ckpt_name"},
    "LoraLoader": {"model", "clip", "lora_name", "strength_model", "strength_clip"},
    "CLIPSetLastLayer": {"clip", "stop_at_clip_layer"},
    "CLIPTextEncode": {"text", "clip"},
    "EmptyLatentImage": {"width", "height", "batch_size"},
    "KSampler": {"model", "seed", "steps", "cfg", "sampler_name", "scheduler", "positive",
                 "negative", "latent_image", "denoise"},
    "VAEDecode": {"samples", "vae"},
    "SaveImage": {"images", "filename_prefix"},
}  # fmt: skip
COMFY_OUTPUTS = {
    "CheckpointLoaderSimple": ["MODEL", "CLIP", "VAE"],
    "LoraLoader": ["MODEL", "CLIP"],
    "CLIPSetLastLayer": ["CLIP"],
    "CLIPTextEncode": ["CONDITIONING"],
    "EmptyLatentImage": ["LATENT"],
    "KSampler": ["LATENT"],
    "VAEDecode": ["IMAGE"],
}
COMFY_INPUT_TYPES = {
    "model": "MODEL", "clip": "CLIP", "vae": "VAE", "positive": "CONDITIONING",
    "negative": "CONDITIONING", "latent_image": "LATENT", "samples": "LATENT", "images": "IMAGE",
}  # fmt: skip
COMFY_SAMPLERS = {
    "euler", "euler_cfg_pp", "euler_ancestral", "euler_ancestral_cfg_pp", "heun", "heunpp2",
    "dpm_2", "dpm_2_ancestral", "lms", "dpm_fast", "dpm_adaptive", "dpmpp_2s_ancestral",
    "dpmpp_sde", "dpmpp_sde_gpu", "dpmpp_2m", "dpmpp_2m_sde", "dpmpp_2m_sde_gpu", "dpmpp_3m_sde",
    "dpmpp_3m_sde_gpu", "ddpm", "lcm", "ipndm", "ipndm_v", "deis", "ddim", "uni_pc", "uni_pc_bh2",
}  # fmt: skip
COMFY_SCHEDULERS = {"normal", "karras", "exponential", "sgm_uniform", "simple", "ddim_uniform",
                    "beta"}  # fmt: skip


def _api(**update: object) -> T2IApi:
    api = T2IApi(
        model="Detail Tweaker",
        type="LORA",
        base_model="SD 1.5",
        width=512,
        height=768,
        sampling_method="DPM++ 2M Karras",
        sampling_steps=25,
        cfg_scale=6.5,
        version_id=62833,
        checkpoint=CheckpointRef(version_id=128713, name="DreamShaper"),
        loras=[
            LoraRef(version_id=62833, name="Detail Tweaker", weight=0.6),
            LoraRef(version_id=5, name="Film grain", weight=-0.3),
        ],
        prompt="portrait of a knight, 'dramatic' light",
        negative_prompt="lowres",
        seed=42,
        clip_skip=2,
    )
    return api.model_copy(update=update)


FILES = {128713: "dreamshaper_8.safetensors", 62833: "add_detail.safetensors"}


def test_a1111_payload_uses_documented_fields() -> None:
    payload = to_a1111_payload(_api(), FILES)
    assert set(payload) <= A1111_TXT2IMG_FIELDS
    assert payload["sampler_name"] == "DPM++ 2M" and payload["scheduler"] == "Karras"
    assert (payload["steps"], payload["cfg_scale"], payload["seed"]) == (25, 6.5, 42)
    assert (payload["width"], payload["height"]) == (512, 768)
    assert "<lora:add_detail:0.6>" in payload["prompt"]
    assert "<lora:Film_grain:-0.3>" in payload["prompt"]
    assert payload["override_settings"] == {
        "sd_model_checkpoint": "dreamshaper_8",
        "CLIP_stop_at_last_layers": 2,
    }
    assert to_a1111_payload(_api(seed=None))["seed"] == -1


@pytest.mark.parametrize("sampler", CANONICAL_SAMPLERS)
def test_a1111_and_comfyui_sampler_names_are_known(sampler: str) -> None:
    payload = to_a1111_payload(_api(sampling_method=sampler))
    assert payload["sampler_name"] in A1111_SAMPLERS
    assert payload["scheduler"] in A1111_SCHEDULERS
    name, scheduler = COMFYUI_SAMPLERS[sampler]
    assert name in COMFY_SAMPLERS and scheduler in COMFY_SCHEDULERS


def test_comfyui_workflow_is_a_valid_graph() -> None:
    graph = to_comfyui_workflow(_api(), FILES)
    types = [node["class_type"] for node in graph.values()]
    assert sorted(types) == sorted(
        ["CheckpointLoaderSimple", "LoraLoader", "LoraLoader", "CLIPSetLastLayer"]
        + ["CLIPTextEncode", "CLIPTextEncode", "EmptyLatentImage", "KSampler"]
        + ["VAEDecode", "SaveImage"]
    )
    for node_id, node in graph.items():
        assert set(node["inputs"]) == COMFY_INPUTS[node["class_type"]], node_id
        for name, value in node["inputs"].items():
            if isinstance(value, list):  # a link: [source node id, output index]
                source = graph[value[0]]["class_type"]
                assert COMFY_OUTPUTS[source][value[1]] == COMFY_INPUT_TYPES[name], (node_id, name)
    sampler = next(n for n in graph.values() if n["class_type"] == "KSampler")["inputs"]
    assert (sampler["sampler_name"], sampler["scheduler"]) == ("dpmpp_2m", "karras")
    assert (sampler["steps"], sampler["cfg"], sampler["seed"]) == (25, 6.5, 42)
    # the sampler's model has passed through both LoRAs, in order
    first = graph[sampler["model"][0]]
    assert first["inputs"]["lora_name"] == "Film_grain.safetensors"
    assert graph[first["inputs"]["model"][0]]["inputs"]["lora_name"] == "add_detail.safetensors"
    skip = next(n for n in graph.values() if n["class_type"] == "CLIPSetLastLayer")
    assert skip["inputs"]["stop_at_clip_layer"] == -2
    ckpt = next(n for n in graph.values() if n["class_type"] == "CheckpointLoaderSimple")
    assert ckpt["inputs"]["ckpt_name"] == "dreamshaper_8.safetensors"


def test_comfyui_without_loras_or_clip_skip() -> None:
    graph = to_comfyui_workflow(_api(loras=[], clip_skip=None, type="Checkpoint", checkpoint=None))
    assert "LoraLoader" not in {n["class_type"] for n in graph.values()}
    skip = next(n for n in graph.values() if n["class_type"] == "CLIPSetLastLayer")
    assert skip["inputs"]["stop_at_clip_layer"] == -1


@pytest.mark.parametrize("base", ["SD 1.5", "SDXL 1.0"])
def test_diffusers_code_is_valid_python_with_real_names(base: str) -> None:
    code = to_diffusers_code(_api(base_model=base, sampling_method="DPM++ 2M SDE Karras"), FILES)
    tree = ast.parse(code)
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
    assert all(hasattr(diffusers, name) for name in imported)
    pipeline = "StableDiffusionXLPipeline" if base == "SDXL 1.0" else "StableDiffusionPipeline"
    assert pipeline in imported
    assert "use_karras_sigmas=True" in code and "algorithm_type='sde-dpmsolver++'" in code
    assert "'dreamshaper_8.safetensors'" in code and "'add_detail.safetensors'" in code
    assert "adapter_weights=[0.6, -0.3]" in code
    assert "clip_skip=1," in code  # A1111 clip skip 2 = diffusers 1
    assert "manual_seed(42)" in code


def test_lora_tags_in_the_prompt_are_not_duplicated() -> None:
    api = _api(prompt="knight <lora:add_detail:0.6>")
    assert to_a1111_payload(api, FILES)["prompt"].count("<lora:add_detail") == 1
    graph = to_comfyui_workflow(api, FILES)
    assert "<lora" not in graph["3"]["inputs"]["text"]
    assert "<lora" not in to_diffusers_code(api, FILES)


def test_a1111_infotext() -> None:
    text = a1111_infotext(_api(), 7, FILES)
    first, negative, settings = text.split("\n")
    assert first.startswith("portrait of a knight") and "<lora:add_detail:0.6>" in first
    assert negative == "Negative prompt: lowres"
    assert settings == (
        "Steps: 25, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 7, "
        "Size: 512x768, Model: dreamshaper_8, Clip skip: 2"
    )


def test_export_text_formats() -> None:
    assert json.loads(export_text(_api(), "a1111"))["steps"] == 25
    assert "KSampler" in export_text(_api(), "comfyui")
    with pytest.raises(ValueError, match="allowed: diffusers, a1111, comfyui"):
        export_text(_api(), "invokeai")
