"""Model store: finding files by name or SHA256, the hash cache, and the refusals."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from diffagent.cards import CardFile, ModelCard, RecommendedParams
from diffagent.tools.store import HashCache, ModelStore, is_safetensors_file, sha256_file


def _card(name: str, sha256: str, fmt: str = "SafeTensor") -> ModelCard:
    return ModelCard(
        version_id=7,
        model_id=3,
        air="urn:air:sd1:checkpoint:civitai:3@7",
        name="Dream",
        version_name="v7",
        type="Checkpoint",
        base_model="SD 1.5",
        description="test card",
        file=CardFile(
            name=name,
            format=fmt,
            sha256=sha256.upper(),
            url="https://civitai.com/api/download/models/7",
        ),
        recommended=RecommendedParams(
            width=512, height=512, sampling_method="Euler a", sampling_steps=20, cfg_scale=7
        ),
    )


@pytest.fixture
def weights(tmp_path: Path) -> Path:
    path = tmp_path / "store" / "sub" / "dream_v7.safetensors"
    path.parent.mkdir(parents=True)
    save_file({"w": torch.arange(6, dtype=torch.float32)}, str(path))
    return path


def _store(root: Path, tmp_path: Path, **kwargs: object) -> ModelStore:
    return ModelStore(root, hash_cache=HashCache(tmp_path / "hashes.json"), **kwargs)  # type: ignore[arg-type]


def test_sha256_matches_hashlib(weights: Path) -> None:
    assert sha256_file(weights) == hashlib.sha256(weights.read_bytes()).hexdigest()


def test_find_by_name_and_verify(weights: Path, tmp_path: Path) -> None:
    card = _card(weights.name, sha256_file(weights))
    store = _store(tmp_path / "store", tmp_path, match="name")
    assert store.resolve(card) == weights


def test_find_by_sha256_under_another_name(weights: Path, tmp_path: Path) -> None:
    card = _card("renamed_by_civitai.safetensors", sha256_file(weights))
    assert _store(tmp_path / "store", tmp_path, match="sha256").resolve(card) == weights
    assert _store(tmp_path / "store", tmp_path).resolve(card) == weights  # name, then hash
    with pytest.raises(FileNotFoundError):
        _store(tmp_path / "store", tmp_path, match="name").find(card)


def test_hash_cache_hashes_once(weights: Path, tmp_path: Path, monkeypatch) -> None:
    cache = HashCache(tmp_path / "hashes.json")
    first = cache.sha256(weights)
    calls: list[Path] = []
    monkeypatch.setattr("diffagent.tools.store.sha256_file", lambda p: calls.append(p) or "x")
    assert HashCache(tmp_path / "hashes.json").sha256(weights) == first  # from disk
    assert calls == []
    weights.write_bytes(weights.read_bytes() + b" ")  # changed file: hashed again
    HashCache(tmp_path / "hashes.json").sha256(weights)
    assert calls == [weights]


def test_missing_file_names_card_file_and_url(tmp_path: Path) -> None:
    card = _card("absent.safetensors", "ab" * 32)
    with pytest.raises(FileNotFoundError) as error:
        _store(tmp_path / "store", tmp_path).resolve(card)
    message = str(error.value)
    assert "Dream v7" in message and "absent.safetensors" in message
    assert "https://civitai.com/api/download/models/7" in message


def test_hash_mismatch_is_refused(weights: Path, tmp_path: Path) -> None:
    card = _card(weights.name, "00" * 32)
    with pytest.raises(ValueError, match="SHA256 mismatch"):
        _store(tmp_path / "store", tmp_path).resolve(card)
    # verify_hash=False loads it anyway (the user's explicit choice)
    assert _store(tmp_path / "store", tmp_path, verify_hash=False).resolve(card) == weights


@pytest.mark.parametrize("suffix", [".ckpt", ".pt", ".bin"])
def test_pickle_files_are_refused_unless_allowed(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / "store" / f"model{suffix}"
    path.parent.mkdir()
    torch.save({"w": torch.zeros(2)}, path)
    card = _card(path.name, sha256_file(path), fmt="PickleTensor")
    with pytest.raises(ValueError, match="pickle"):
        _store(tmp_path / "store", tmp_path).resolve(card)
    assert _store(tmp_path / "store", tmp_path, allow_pickle=True).resolve(card) == path


def test_pickle_disguised_as_safetensors_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "store" / "model.safetensors"
    path.parent.mkdir()
    torch.save({"w": torch.zeros(2)}, path)
    assert not is_safetensors_file(path)
    with pytest.raises(ValueError, match="pickle"):
        _store(tmp_path / "store", tmp_path).resolve(_card(path.name, sha256_file(path)))


def test_config_override_and_packaged_default(weights: Path, tmp_path: Path) -> None:
    store = _store(tmp_path / "store", tmp_path)
    packaged = store.config_dir(weights, "SD 1.5")
    assert (packaged / "model_index.json").is_file()
    assert (packaged / "tokenizer" / "vocab.json").is_file()
    override = tmp_path / "store" / "cfg"
    override.mkdir()
    (override / "model_index.json").write_text("{}")
    (tmp_path / "store" / "model-store.json").write_text(
        json.dumps({"configs": {weights.name: "cfg"}})
    )
    assert store.config_dir(weights, "SD 1.5") == override


def test_unknown_match_mode(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="allowed"):
        ModelStore(tmp_path, match="fuzzy")  # type: ignore[arg-type]


def test_same_name_other_version_falls_back_to_hash(weights: Path, tmp_path: Path) -> None:
    card = _card(weights.name, sha256_file(weights))
    stale = tmp_path / "store" / "a" / weights.name  # found first by name, wrong content
    stale.parent.mkdir()
    save_file({"w": torch.zeros(3)}, str(stale))
    assert _store(tmp_path / "store", tmp_path).resolve(card) == weights
    with pytest.raises(ValueError, match="SHA256 mismatch"):
        _store(tmp_path / "store", tmp_path, match="name").resolve(card)
