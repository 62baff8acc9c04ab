"""A T2I API as diffusers code, an A1111/Forge `/sdapi/v1/txt2img` payload, a ComfyUI workflow.

File names: the exports refer to checkpoint and LoRA files by name. Pass `files` (version id -> file
name, e.g. `{card.version_id: card.file.name}`) to use the real names; otherwise a name is made from
the model's display name.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from diffagent.api import T2IApi
from diffagent.base_models import base_model_spec
from diffagent.cards import one_line
from diffagent.tools.generate import diffusers_clip_skip
from diffagent.tools.prompt_embeds import strip_extra_networks
from diffagent.tools.schedulers import scheduler_spec

ExportFormat = Literal["diffusers", "a1111", "comfyui"]
EXPORT_FORMATS: tuple[str, ...] = ("diffusers", "a1111", "comfyui")

# A1111 name -> ComfyUI KSampler (sampler_name, scheduler). ComfyUI has no PLMS; ipndm (improved
# pseudo-numerical multistep) is its nearest.
COMFYUI_SAMPLERS: dict[str, tuple[str, str]] = {
    "Euler a": ("euler_ancestral", "normal"),
    "Euler": ("euler", "normal"),
    "LMS": ("lms", "normal"),
    "LMS Karras": ("lms", "karras"),
    "Heun": ("heun", "normal"),
    "DPM2": ("dpm_2", "normal"),
    "DPM2 a": ("dpm_2_ancestral", "normal"),
    "DPM2 Karras": ("dpm_2", "karras"),
    "DPM2 a Karras": ("dpm_2_ancestral", "karras"),
    "DPM++ 2S a": ("dpmpp_2s_ancestral", "normal"),
    "DPM++ 2S a Karras": ("dpmpp_2s_ancestral", "karras"),
    "DPM++ 2M": ("dpmpp_2m", "normal"),
    "DPM++ 2M Karras": ("dpmpp_2m", "karras"),
    "DPM++ SDE": ("dpmpp_sde", "normal"),
    "DPM++ SDE Karras": ("dpmpp_sde", "karras"),
    "DPM++ 2M SDE": ("dpmpp_2m_sde", "normal"),
    "DPM++ 2M SDE Karras": ("dpmpp_2m_sde", "karras"),
    "DPM fast": ("dpm_fast", "normal"),
    "DPM adaptive": ("dpm_adaptive", "normal"),
    "DDIM": ("ddim", "ddim_uniform"),
    "PLMS": ("ipndm", "normal"),
    "UniPC": ("uni_pc", "normal"),
}


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "model"


def _checkpoint_name(api: T2IApi) -> tuple[int | None, str]:
    if api.checkpoint is not None:
        return api.checkpoint.version_id, api.checkpoint.name
    return api.version_id, api.model


def checkpoint_file(api: T2IApi, files: dict[int, str] | None = None) -> str:
    """The checkpoint's file name: from `files` by version id, else made from its name."""
    version_id, name = _checkpoint_name(api)
    if files and version_id in files:
        return files[version_id]
    return _slug(name) + ".safetensors"


def lora_files(api: T2IApi, files: dict[int, str] | None = None) -> list[tuple[str, float]]:
    """(file name, weight) of each LoRA, in API order."""
    out = []
    for lora in api.loras:
        name = (files or {}).get(lora.version_id) or _slug(lora.name) + ".safetensors"
        out.append((name, lora.weight))
    return out


def _stem(file_name: str) -> str:
    return file_name.rsplit(".", 1)[0] if "." in file_name else file_name


def a1111_sampler(sampler: str) -> tuple[str, str]:
    """A1111 >= 1.9 splits 'DPM++ 2M Karras' into sampler 'DPM++ 2M' and scheduler 'Karras'."""
    scheduler_spec(sampler)  # unknown names fail here, with the allowed list
    if sampler.endswith(" Karras"):
        return sampler.removesuffix(" Karras"), "Karras"
    return sampler, "Automatic"


def to_a1111_payload(api: T2IApi, files: dict[int, str] | None = None) -> dict[str, Any]:
    """The API as an AUTOMATIC1111/Forge `POST /sdapi/v1/txt2img` JSON body."""
    sampler, scheduler = a1111_sampler(api.sampling_method)
    prompt = strip_extra_networks(api.prompt)  # LoRA tags come from api.loras, once
    for name, weight in lora_files(api, files):
        # '<', '>' and ':' would end the tag early and let a file name add another LoRA.
        stem = re.sub(r"[<>:]", "_", _stem(name))
        prompt = f"{prompt} <lora:{stem}:{weight:g}>".strip()
    override: dict[str, Any] = {"sd_model_checkpoint": _stem(checkpoint_file(api, files))}
    if api.clip_skip is not None:
        override["CLIP_stop_at_last_layers"] = api.clip_skip
    return {
        "prompt": prompt,
        "negative_prompt": api.negative_prompt,
        "seed": api.seed if api.seed is not None else -1,
        "sampler_name": sampler,
        "scheduler": scheduler,
        "steps": api.sampling_steps,
        "cfg_scale": api.cfg_scale,
        "width": api.width,
        "height": api.height,
        "batch_size": 1,
        "n_iter": 1,
        "override_settings": override,
        "override_settings_restore_afterwards": True,
    }


def to_comfyui_workflow(api: T2IApi, files: dict[int, str] | None = None) -> dict[str, Any]:
    """The API as a ComfyUI API-format workflow (`POST /prompt` body's `prompt` field)."""
    sampler_name, scheduler = COMFYUI_SAMPLERS[api.sampling_method]
    graph: dict[str, Any] = {
        "1": {
            "class_type": "CheckpointLoaderSimple",
            "inputs": {"ckpt_name": checkpoint_file(api, files)},
        }
    }
    model: list[Any] = ["1", 0]
    clip: list[Any] = ["1", 1]
    for index, (name, weight) in enumerate(lora_files(api, files)):
        node = str(10 + index)
        graph[node] = {
            "class_type": "LoraLoader",
            "inputs": {
                "model": model,
                "clip": clip,
                "lora_name": name,
                "strength_model": weight,
                "strength_clip": weight,
            },
        }
        model, clip = [node, 0], [node, 1]
    graph["2"] = {
        "class_type": "CLIPSetLastLayer",
        "inputs": {"clip": clip, "stop_at_clip_layer": -(api.clip_skip or 1)},
    }
    text = strip_extra_networks(api.prompt)  # ComfyUI applies LoRAs through LoraLoader nodes
    graph["3"] = {"class_type": "CLIPTextEncode", "inputs": {"text": text, "clip": ["2", 0]}}
    graph["4"] = {
        "class_type": "CLIPTextEncode",
        "inputs": {"text": api.negative_prompt, "clip": ["2", 0]},
    }
    graph["5"] = {
        "class_type": "EmptyLatentImage",
        "inputs": {"width": api.width, "height": api.height, "batch_size": 1},
    }
    graph["6"] = {
        "class_type": "KSampler",
        "inputs": {
            "model": model,
            "seed": api.seed if api.seed is not None else 0,
            "steps": api.sampling_steps,
            "cfg": api.cfg_scale,
            "sampler_name": sampler_name,
            "scheduler": scheduler,
            "positive": ["3", 0],
            "negative": ["4", 0],
            "latent_image": ["5", 0],
            "denoise": 1.0,
        },
    }
    graph["7"] = {"class_type": "VAEDecode", "inputs": {"samples": ["6", 0], "vae": ["1", 2]}}
    graph["8"] = {
        "class_type": "SaveImage",
        "inputs": {"images": ["7", 0], "filename_prefix": "DiffAgent"},
    }
    return graph


def to_diffusers_code(api: T2IApi, files: dict[int, str] | None = None) -> str:
    """The API as a runnable diffusers Python script (weights read from the current folder)."""
    spec = scheduler_spec(api.sampling_method)
    pipeline = base_model_spec(api.base_model).pipeline_class
    extra = "".join(f", {key}={value!r}" for key, value in spec.config.items())
    lines = [
        # Every value below is written by repr(): a name or prompt can never end the line.
        f"# model {api.model!r} ({api.base_model!r}), sampler {api.sampling_method!r}",
        "import torch",
        f"from diffusers import {pipeline}, {spec.class_name}",
        "",
        'device = "cuda" if torch.cuda.is_available() else "cpu"',
        "dtype = torch.float16 if device == 'cuda' else torch.float32",
        f"pipe = {pipeline}.from_single_file({checkpoint_file(api, files)!r}, torch_dtype=dtype)",
        f"pipe.scheduler = {spec.class_name}.from_config(pipe.scheduler.config{extra})",
    ]
    loras = lora_files(api, files)
    for index, (name, _) in enumerate(loras):
        lines.append(f"pipe.load_lora_weights({name!r}, adapter_name='lora{index}')")
    if loras:
        names = [f"lora{index}" for index in range(len(loras))]
        weights = [weight for _, weight in loras]
        lines.append(f"pipe.set_adapters({names!r}, adapter_weights={weights!r})")
    seed = api.seed if api.seed is not None else 0
    lines += [
        "pipe.to(device)",
        "# diffusers reads A1111 weights such as (word:1.2) as plain text and truncates prompts",
        "# past 77 tokens; DiffAgent's generator (tools/prompt_embeds.py) encodes them as A1111.",
        "image = pipe(",
        f"    prompt={strip_extra_networks(api.prompt)!r},",
        f"    negative_prompt={strip_extra_networks(api.negative_prompt)!r},",
        f"    width={api.width!r},",
        f"    height={api.height!r},",
        f"    num_inference_steps={api.sampling_steps!r},",
        f"    guidance_scale={api.cfg_scale!r},",
        f"    clip_skip={diffusers_clip_skip(api.clip_skip)!r},",
        f"    generator=torch.Generator('cpu').manual_seed({seed!r}),",
        ").images[0]",
        'image.save("diffagent.png")',
    ]
    return "\n".join(lines) + "\n"


def a1111_infotext(api: T2IApi, seed: int, files: dict[int, str] | None = None) -> str:
    """A1111's PNG `parameters` text for one image, so A1111/Civitai read its settings back."""
    payload = to_a1111_payload(api.model_copy(update={"seed": seed}), files)
    fields = [
        f"Steps: {api.sampling_steps}",
        f"Sampler: {payload['sampler_name']}",
        f"Schedule type: {payload['scheduler']}",
        f"CFG scale: {api.cfg_scale:g}",
        f"Seed: {seed}",
        f"Size: {api.width}x{api.height}",
        f"Model: {one_line(payload['override_settings']['sd_model_checkpoint'])}",
    ]
    if api.clip_skip is not None:
        fields.append(f"Clip skip: {api.clip_skip}")
    text = payload["prompt"]
    if api.negative_prompt:
        text += f"\nNegative prompt: {api.negative_prompt}"
    return text + "\n" + ", ".join(fields)


def export_text(api: T2IApi, fmt: str, files: dict[int, str] | None = None) -> str:
    """One export as text: Python code for diffusers, indented JSON for a1111 and comfyui."""
    if fmt == "diffusers":
        return to_diffusers_code(api, files)
    if fmt == "a1111":
        return json.dumps(to_a1111_payload(api, files), indent=2, ensure_ascii=False)
    if fmt == "comfyui":
        return json.dumps(to_comfyui_workflow(api, files), indent=2, ensure_ascii=False)
    raise ValueError(f"unknown export format {fmt!r}; allowed: {', '.join(EXPORT_FORMATS)}")


def all_exports(api: T2IApi, files: dict[int, str] | None = None) -> dict[str, str]:
    """Every export as text, keyed by format (what a chat turn shows)."""
    return {fmt: export_text(api, fmt, files) for fmt in EXPORT_FORMATS}
