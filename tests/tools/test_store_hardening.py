"""Model store refusals: pickles inside unpacked folders, damaged safetensors, config folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from diffagent.cards import ModelCard
from diffagent.tools.store import HashCache, ModelStore, safetensors_problem, sha256_file

from .test_store import _card as store_card


def _card(name: str, sha256: str = "00" * 32) -> ModelCard:
    return store_card(name, sha256, fmt="Diffusers")


def _store(root: Path, **kwargs: object) -> ModelStore:
    return ModelStore(root, hash_cache=HashCache(root.parent / "hashes.json"), **kwargs)  # type: ignore[arg-type]


def _folder(root: Path, weight_name: str) -> Path:
    folder = root / "dream_v7"
    (folder / "unet").mkdir(parents=True)
    (folder / "model_index.json").write_text("{}")
    save_file({"w": torch.zeros(2)}, str(folder / "vae.safetensors"))
    torch.save({"w": torch.zeros(2)}, folder / "unet" / weight_name)
    return folder


@pytest.mark.parametrize("weight_name", ["diffusion_pytorch_model.bin", "model.ckpt", "x.pkl"])
def test_unpacked_folder_with_pickled_weights_is_refused(tmp_path: Path, weight_name: str) -> None:
    folder = _folder(tmp_path / "store", weight_name)
    card = _card("dream_v7.zip")
    with pytest.raises(ValueError, match="pickle"):
        _store(tmp_path / "store").resolve(card)
    assert _store(tmp_path / "store", allow_pickle=True).resolve(card) == folder


def test_unpacked_folder_of_safetensors_loads_and_a_damaged_one_does_not(tmp_path: Path) -> None:
    folder = _folder(tmp_path / "store", "diffusion_pytorch_model.bin")
    (folder / "unet" / "diffusion_pytorch_model.bin").unlink()
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    save_file({"w": torch.zeros(8)}, str(weights))
    assert _store(tmp_path / "store").resolve(_card("dream_v7")) == folder
    weights.write_bytes(weights.read_bytes()[:-5])
    with pytest.raises(ValueError, match="truncated"):
        _store(tmp_path / "store").resolve(_card("dream_v7"))


def _weights(tmp_path: Path) -> Path:
    path = tmp_path / "store" / "dream_v7.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"a": torch.arange(6, dtype=torch.float32), "b": torch.ones(3)}, str(path))
    return path


@pytest.mark.parametrize(
    ("damage", "words"),
    [
        (lambda data: data[:-4], "truncated"),
        (lambda data: data[:20], "does not fit"),
        (lambda data: data[:8] + b"{" + b"\xff" * (len(data) - 9), "not JSON"),
        (lambda data: (10**9).to_bytes(8, "little") + data[8:], "does not fit"),
        (lambda data: b"", "shorter"),
    ],
)
def test_damaged_safetensors_refused_even_without_hash_check(
    tmp_path: Path, damage, words: str
) -> None:
    path = _weights(tmp_path)
    assert safetensors_problem(path) is None
    path.write_bytes(damage(path.read_bytes()))
    store = _store(tmp_path / "store", verify_hash=False, allow_pickle=True)
    with pytest.raises(ValueError, match=words):
        store.resolve(_card(path.name, sha256_file(path)))


def test_config_folder_is_never_taken_for_a_missing_checkpoint(tmp_path: Path) -> None:
    root = tmp_path / "store"
    config = root / "configs" / "dream_v7"
    config.mkdir(parents=True)
    (config / "model_index.json").write_text("{}")
    (root / "model-store.json").write_text(
        json.dumps({"configs": {"dream_v7.safetensors": "configs/dream_v7"}})
    )
    with pytest.raises(FileNotFoundError, match="not in the model store"):
        _store(root).resolve(_card("dream_v7.safetensors"))
    # even when not named in model-store.json: a folder without weights is no model
    (root / "model-store.json").unlink()
    with pytest.raises(FileNotFoundError, match="not in the model store"):
        _store(root).resolve(_card("dream_v7.safetensors"))


def test_loader_errors_become_one_line_value_errors(tmp_path: Path, monkeypatch) -> None:
    from diffusers import StableDiffusionPipeline

    from diffagent.tools.generate import GenerationConfig, Generator

    def broken(*args: object, **kwargs: object) -> None:
        raise OSError("Error no file named model.safetensors found in directory x\nmore")

    monkeypatch.setattr(StableDiffusionPipeline, "from_single_file", broken)
    path = _weights(tmp_path)
    generator = Generator(GenerationConfig(model_store=path.parent, device="cpu"))
    with pytest.raises(ValueError, match=r"could not load .*OSError: Error no file") as error:
        generator._load(path, "SD 1.5")
    assert "\n" not in str(error.value)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from diffagent.tools.testing.tiny import make_tiny_weights

    return make_tiny_weights(tmp_path_factory.mktemp("tiny-weights"))


def _generate(tiny: dict[str, Path], store: Path, out: Path, *extra: str) -> int:
    from diffagent.ui.cli import main

    api = str(tiny["sd15_api"])
    args = ["generate", "--api", api, "--out", str(out), "--seeds", "1", "--device", "cpu"]
    return main([*args, "--model-store", str(store), "--cards", str(tiny["cards"]), *extra])


def _copy_store(tiny: dict[str, Path], dest: Path) -> Path:
    import shutil

    return Path(shutil.copytree(tiny["cards"].parent, dest))


@pytest.mark.parametrize(
    "damage", [lambda data: data[: len(data) // 2], lambda data: b"\x10" * 8 + data[8:]]
)
def test_cli_generate_damaged_checkpoint_is_one_line_exit_2(
    tiny: dict[str, Path], tmp_path: Path, capsys, damage
) -> None:
    store = _copy_store(tiny, tmp_path / "store")
    checkpoint = store / tiny["sd15"].name
    checkpoint.write_bytes(damage(checkpoint.read_bytes()))
    assert _generate(tiny, store, tmp_path / "out", "--no-verify-hash") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert "safetensors" in err


def test_cli_generate_missing_checkpoint_names_it(
    tiny: dict[str, Path], tmp_path: Path, capsys
) -> None:
    store = _copy_store(tiny, tmp_path / "store")
    (store / tiny["sd15"].name).unlink()
    assert _generate(tiny, store, tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "not in the model store" in err and tiny["sd15"].name in err
    assert "model.safetensors" not in err.replace(tiny["sd15"].name, "")
