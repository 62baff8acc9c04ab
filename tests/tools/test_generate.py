"""End-to-end generation, offline: tiny single-file SD 1.5 / SDXL checkpoints + kohya LoRAs."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from safetensors.torch import load_file

from diffagent.api import T2IApi
from diffagent.cards import ModelCard, read_cards
from diffagent.tools.generate import GenerationConfig, Generator
from diffagent.tools.testing.ldm_layout import (
    clip_to_ldm,
    open_clip_to_ldm,
    unet_to_ldm,
    vae_to_ldm,
)
from diffagent.tools.testing.tiny import make_tiny_weights

# Last 3x3 pixels of the blue channel of seed 1's image (diffusers-test style), recorded once with
# one torch thread; random tiny nets amplify float summation-order differences, hence the tolerance.
EXPECTED_SLICE = {
    "sd15": [0.5176, 0.5020, 0.4471, 0.4627, 0.4941, 0.4667, 0.4431, 0.4549, 0.4549],
    "sdxl": [0.4980, 0.4980, 0.4667, 0.6471, 0.5373, 0.4510, 0.6549, 0.6549, 0.5176],
}
SEEDS = [1, 2]


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny models gain nothing from threads; on a busy 2-core machine OpenMP spinning costs 10x."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_tiny_weights(tmp_path_factory.mktemp("tiny-weights"))


@pytest.fixture(scope="module")
def cards(tiny: dict[str, Path]) -> dict[int, ModelCard]:
    return {card.version_id: card for card in read_cards(tiny["cards"])}


@pytest.fixture(scope="module")
def generator(tiny: dict[str, Path]) -> Generator:
    config = GenerationConfig(model_store=tiny["cards"].parent, device="cpu", max_pipelines=2)
    return Generator(config)


def _api(tiny: dict[str, Path], kind: str, **update: object) -> T2IApi:
    api = T2IApi.model_validate_json(tiny[f"{kind}_api"].read_text())
    return api.model_copy(update=update)


def _run(gen: Generator, cards: dict[int, ModelCard], api: T2IApi, seeds=SEEDS) -> np.ndarray:
    loras = [cards[lora.version_id] for lora in api.loras]
    images = gen.generate(api, seeds, cards[api.version_id], loras)  # type: ignore[index]
    assert [image.size for image in images] == [(api.width, api.height)] * len(seeds)
    return np.stack([np.asarray(image, dtype=np.float32) / 255 for image in images])


@pytest.mark.parametrize("kind", ["sd15", "sdxl"])
def test_end_to_end_deterministic_with_lora(tiny, cards, generator, kind: str) -> None:
    api = _api(tiny, kind)
    assert api.loras and api.width == 64 and api.sampling_steps == 2
    first = _run(generator, cards, api)
    assert first.shape == (2, 64, 64, 3)
    assert np.abs(first[0] - first[1]).max() > 0.05  # seeds differ
    # a fresh generator (fresh load) reproduces the images
    fresh = Generator(GenerationConfig(model_store=tiny["cards"].parent, device="cpu"))
    again = _run(fresh, cards, api)
    assert np.abs(first - again).max() < 1e-3
    image_slice = first[0, -3:, -3:, -1].flatten()
    assert np.abs(image_slice - np.array(EXPECTED_SLICE[kind])).max() < 3e-2


@pytest.mark.parametrize("kind", ["sd15", "sdxl"])
def test_lora_and_params_switch_without_reloading(tiny, cards, generator, kind: str) -> None:
    api = _api(tiny, kind)
    with_lora = _run(generator, cards, api)
    loads = generator.loads
    # every UNet LoRA module of the kohya file (sgm names for SDXL) was applied
    lora_file = load_file(str(tiny[f"{kind}_lora"]))
    expected = sum(
        k.startswith("lora_unet_") and k.endswith(".lora_down.weight") for k in lora_file
    )
    unet = next(
        p.pipe for key, p in generator._pipelines.items() if key[0].endswith(f"{kind}.safetensors")
    ).unet
    assert sum(bool(getattr(m, "lora_A", None)) for m in unet.modules()) == expected > 0
    no_lora = _run(generator, cards, api.model_copy(update={"loras": []}))
    assert np.abs(with_lora - no_lora).max() > 0.05  # the LoRA changes the output
    weaker = api.model_copy(
        update={
            "loras": [api.loras[0].model_copy(update={"weight": 0.2})],
            "sampling_method": "DPM++ 2M Karras",
        }
    )
    assert np.abs(_run(generator, cards, weaker) - with_lora).max() > 0.01
    assert np.abs(_run(generator, cards, api) - with_lora).max() < 1e-3  # back to the same
    assert generator.loads == loads  # nothing reloaded


def test_clip_skip_and_negative_prompt_matter(tiny, cards, generator) -> None:
    api = _api(tiny, "sd15", loras=[])
    base = _run(generator, cards, api, seeds=[3])
    assert (
        np.abs(_run(generator, cards, api.model_copy(update={"clip_skip": 1}), [3]) - base).max()
        > 0.01
    )
    negative = api.model_copy(update={"negative_prompt": "a red car"})
    assert np.abs(_run(generator, cards, negative, [3]) - base).max() > 0.01


def test_sde_sampler_is_deterministic(tiny, cards, generator) -> None:
    api = _api(tiny, "sd15", sampling_method="DPM++ SDE Karras")
    assert np.abs(_run(generator, cards, api) - _run(generator, cards, api)).max() < 1e-3


@pytest.mark.parametrize("kind", ["sd15", "sdxl"])
def test_single_file_layout_round_trips(tiny, kind: str) -> None:
    """Diffusers' loader reads our ldm layout back to the same tensors, key for key."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    pipeline_class = StableDiffusionXLPipeline if kind == "sdxl" else StableDiffusionPipeline
    config = str(tiny[f"{kind}_config"])
    pipe = pipeline_class.from_single_file(str(tiny[kind]), config=config, local_files_only=True)
    state = {
        **unet_to_ldm(pipe.unet.state_dict(), dict(pipe.unet.config)),
        **vae_to_ldm(pipe.vae.state_dict(), dict(pipe.vae.config)),
    }
    if kind == "sd15":
        state.update(clip_to_ldm(pipe.text_encoder.state_dict(), "cond_stage_model.transformer."))
    else:
        state.update(
            clip_to_ldm(pipe.text_encoder.state_dict(), "conditioner.embedders.0.transformer.")
        )
        state.update(
            open_clip_to_ldm(pipe.text_encoder_2.state_dict(), "conditioner.embedders.1.model.")
        )
    on_disk = load_file(str(tiny[kind]))
    assert set(state) == set(on_disk)
    assert all(torch.equal(state[key], on_disk[key]) for key in on_disk)


def test_refusals_before_loading(tiny, cards, tmp_path: Path) -> None:
    gen = Generator(GenerationConfig(model_store=tmp_path, device="cpu"))
    api = _api(tiny, "sd15")
    with pytest.raises(FileNotFoundError, match="download it from file://"):
        _run(gen, cards, api)
    with pytest.raises(ValidationError, match="width 500 is not a multiple of 8"):
        api.model_copy(update={"width": 500}).model_validate(api.model_dump() | {"width": 500})
    with pytest.raises(ValueError, match="width 500"):
        gen.generate(api.model_copy(update={"width": 500}), [1], cards[api.version_id], [])
    with pytest.raises(ValueError, match="unknown sampler"):
        gen.generate(
            api.model_copy(update={"sampling_method": "Restart"}), [1], cards[api.version_id], []
        )
    with pytest.raises(ValueError, match="no card given for LoRA"):
        gen.generate(api, [1], cards[api.version_id], [])
    sdxl_card = cards[_api(tiny, "sdxl").version_id]
    with pytest.raises(ValueError, match="SDXL 1.0, but the API asks for SD 1.5"):
        gen.generate(api.model_copy(update={"loras": []}), [1], sdxl_card, [])
    assert gen.loads == 0


def test_cli_generate_and_export(tiny, tmp_path: Path, capsys) -> None:
    from diffagent.ui.cli import main

    store = str(tiny["cards"].parent)
    out = tmp_path / "images"
    api = str(tiny["sd15_api"])
    args = ["generate", "--api", api, "--out", str(out), "--seeds", "2", "--model-store", store]
    assert main([*args, "--device", "cpu"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["seed-1.png", "seed-2.png"]
    from PIL import Image

    infotext = Image.open(out / "seed-2.png").text["parameters"]
    assert "Seed: 2" in infotext and "Model: tiny-sd15" in infotext
    assert "<lora:tiny-sd15-lora:0.8>" in infotext and "Negative prompt: blurry" in infotext
    capsys.readouterr()
    assert main(["export", "--api", api, "--to", "comfyui", "--cards", str(tiny["cards"])]) == 0
    workflow = json.loads(capsys.readouterr().out)
    assert workflow["1"]["inputs"]["ckpt_name"] == "tiny-sd15.safetensors"
    empty = tmp_path / "empty-store"
    empty.mkdir()
    args = ["generate", "--api", api, "--out", str(out), "--model-store", str(empty)]
    assert main([*args, "--cards", str(tiny["cards"])]) == 2  # missing weights: one-line error
    assert "tiny-sd15.safetensors" in capsys.readouterr().err
    bad = tmp_path / "bad-api.json"
    bad.write_text(json.dumps(json.loads(tiny["sd15_api"].read_text()) | {"width": 500}))
    assert main(["export", "--api", str(bad), "--to", "a1111"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "width 500 is not a multiple of 8" in err


def test_cli_make_tiny_weights_adds_scorer_weights(tmp_path: Path, monkeypatch, capsys) -> None:
    import diffagent.tools.testing.tiny
    from diffagent.ui.cli import main

    monkeypatch.setattr(
        diffagent.tools.testing.tiny, "make_tiny_weights", lambda d: {"sd15": d / "a"}
    )
    if importlib.util.find_spec("diffagent.tools.testing.score_tiny") is not None:
        import diffagent.tools.testing.score_tiny

        monkeypatch.setattr(
            diffagent.tools.testing.score_tiny,
            "make_tiny_scorer_weights",
            lambda d: {"clip": d / "c"},
        )
    assert main(["testing", "make-tiny-weights", str(tmp_path)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["sd15"] == str(tmp_path / "a")
    if importlib.util.find_spec("diffagent.tools.testing.score_tiny") is not None:
        assert printed["clip"] == str(tmp_path / "c")


def test_diffusers_folder_gives_the_same_images(tiny, cards, generator, tmp_path: Path) -> None:
    from diffusers import StableDiffusionPipeline

    config = str(tiny["sd15_config"])
    pipe = StableDiffusionPipeline.from_single_file(str(tiny["sd15"]), config=config)
    pipe.save_pretrained(tmp_path / "store" / "tiny-sd15-diffusers")
    api = _api(tiny, "sd15", loras=[])
    card = cards[api.version_id]  # type: ignore[index]
    file = card.file.model_copy(update={"name": "tiny-sd15-diffusers.zip", "format": "Diffusers"})
    folder_card = card.model_copy(update={"file": file})
    folder_gen = Generator(GenerationConfig(model_store=tmp_path / "store", device="cpu"))
    images = folder_gen.generate(api, [1], folder_card, [])
    from_folder = np.asarray(images[0], dtype=np.float32) / 255
    assert np.abs(from_folder - _run(generator, cards, api, seeds=[1])[0]).max() < 1e-3


def test_pipeline_cache_evicts_oldest(tiny, cards) -> None:
    gen = Generator(GenerationConfig(model_store=tiny["cards"].parent, device="cpu"))
    for kind in ("sd15", "sdxl", "sdxl"):
        _run(gen, cards, _api(tiny, kind, loras=[]), seeds=[0])
    assert gen.loads == 2 and len(gen._pipelines) == 1
    gen.clear()
    assert not gen._pipelines


def test_least_recently_used_lora_is_unloaded(tiny, cards) -> None:
    import shutil

    api = _api(tiny, "sd15")
    lora = cards[api.loras[0].version_id]
    copy = tiny["cards"].parent / "tiny-sd15-lora-copy.safetensors"
    shutil.copy(tiny["sd15_lora"], copy)
    twin = lora.model_copy(
        update={"version_id": 5, "file": lora.file.model_copy(update={"name": copy.name})}
    )
    config = GenerationConfig(model_store=tiny["cards"].parent, device="cpu", max_loras=1)
    gen = Generator(config)
    checkpoint = cards[api.version_id]  # type: ignore[index]
    first = gen.generate(api, [1], checkpoint, [lora])
    twin_api = api.model_copy(update={"loras": [api.loras[0].model_copy(update={"version_id": 5})]})
    second = gen.generate(twin_api, [1], checkpoint, [twin])
    loaded = next(iter(gen._pipelines.values()))
    assert list(loaded.adapters) == [str(copy.resolve())]
    assert set(loaded.pipe.get_list_adapters()["unet"]) == {"lora2"}
    diff = np.abs(np.asarray(first[0], dtype=float) - np.asarray(second[0], dtype=float)).max()
    assert diff <= 1  # same weights under another name: same image (uint8)
