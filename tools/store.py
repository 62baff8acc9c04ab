"""The local model store: a folder of Civitai downloads, found by SHA256 or name, checked.

A store may hold `model-store.json` with per-file pipeline config overrides:
`{"configs": {"my-model.safetensors": "relative/or/absolute/config/folder"}}`.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Literal

from tqdm import tqdm

from diffagent.cards import ModelCard
from diffagent.paths import user_data_dir
from diffagent.tools.pipeline_configs import packaged_config_dir

MatchMode = Literal["sha256", "name", "name_or_sha256"]
MATCH_MODES: tuple[str, ...] = ("sha256", "name", "name_or_sha256")
STORE_CONFIG = "model-store.json"
WEIGHT_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pickle")
_MAX_HEADER = 100_000_000  # safetensors' own limit on the JSON header
_HASH_CHUNK = 8 * 1024 * 1024
_PROGRESS_ABOVE = 256 * 1024 * 1024  # show a progress bar when hashing files above this size


def default_model_store() -> Path:
    """The default model store folder, `<user data dir>/models`."""
    return user_data_dir() / "models"


def sha256_file(path: Path) -> str:
    """Lower-case hex SHA256 of a file, read in chunks (a progress bar for big files)."""
    digest = hashlib.sha256()
    size = path.stat().st_size
    with (
        path.open("rb") as handle,
        tqdm(
            total=size,
            unit="B",
            unit_scale=True,
            desc=f"sha256 {path.name}",
            disable=size < _PROGRESS_ABOVE,
        ) as bar,
    ):
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
            bar.update(len(chunk))
    return digest.hexdigest()


class HashCache:
    """SHA256 per file keyed by (path, size, mtime), persisted as JSON: big files hash once."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or user_data_dir() / "sha256-cache.json"
        self._lock = threading.Lock()
        self._entries: dict[str, str] | None = None

    def _load(self) -> dict[str, str]:
        if self._entries is None:
            try:
                self._entries = json.loads(self.path.read_text(encoding="utf-8"))
            except (FileNotFoundError, json.JSONDecodeError):
                self._entries = {}
        return self._entries

    def sha256(self, path: Path) -> str:
        """The file's lower-case SHA256, from the cache when the file is unchanged."""
        stat = path.stat()
        key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
        with self._lock:
            entries = self._load()
            if key in entries:
                return entries[key]
        value = sha256_file(path)
        with self._lock:
            entries = self._load()
            entries[key] = value
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(entries, indent=0), encoding="utf-8")
            tmp.replace(self.path)
        return value


def is_safetensors_file(path: Path) -> bool:
    """Whether a file really is safetensors (8-byte header size, then a JSON object)."""
    with path.open("rb") as handle:
        head = handle.read(9)
    if len(head) < 9:
        return False
    header_size = int.from_bytes(head[:8], "little")
    return 0 < header_size < 100_000_000 and head[8:9] == b"{"


def safetensors_problem(path: Path) -> str | None:
    """Why a safetensors file cannot load (bad header, truncated data), or None when it can.

    Reads only the header: the JSON must parse and its tensors' data offsets must end exactly
    where the file ends, as the safetensors loader requires.
    """
    size = path.stat().st_size
    with path.open("rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            return f"{size} bytes, shorter than a safetensors header"
        header_size = int.from_bytes(head, "little")
        if not 1 < header_size < _MAX_HEADER or 8 + header_size > size:
            return f"header length {header_size} does not fit the file's {size} bytes"
        raw = handle.read(header_size)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return "its header is not JSON"
    if not isinstance(header, dict):
        return "its header is not a JSON object"
    end = 0
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2):
            return f"tensor {key!r} has no data_offsets"
        end = max(end, *(int(o) for o in offsets if isinstance(o, int)))
    data = size - 8 - header_size
    if end != data:
        return f"its tensors need {end} bytes of data but the file has {data} (truncated?)"
    return None


def write_store_config(root: Path, *, configs: dict[str, str]) -> Path:
    """Write `model-store.json` with per-file pipeline config folders; return its path."""
    path = Path(root) / STORE_CONFIG
    path.write_text(json.dumps({"configs": configs}, indent=2) + "\n", encoding="utf-8")
    return path


class ModelStore:
    """Finds a card's weights in a local folder and checks them (format, SHA256) before loading."""

    def __init__(
        self,
        root: Path,
        *,
        match: MatchMode = "name_or_sha256",
        allow_pickle: bool = False,
        verify_hash: bool = True,
        hash_cache: HashCache | None = None,
    ) -> None:
        if match not in MATCH_MODES:
            raise ValueError(f"unknown match mode {match!r}; allowed: {', '.join(MATCH_MODES)}")
        self.root = Path(root).expanduser()
        self.match = match
        self.allow_pickle = allow_pickle
        self.verify_hash = verify_hash
        self.hashes = hash_cache or HashCache()

    def _candidates(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        return sorted(
            p for p in self.root.rglob("*") if p.is_file() and p.suffix.lower() in WEIGHT_SUFFIXES
        )

    def _by_name(self, card: ModelCard) -> Path | None:
        if not self.root.is_dir():
            return None
        name = card.file.name
        stem = Path(name).stem
        for path in sorted(self.root.rglob(name)):
            if path.is_file():
                return path
        # A diffusers folder is stored unpacked, named after the file (with or without suffix).
        for folder_name in (name, stem):
            for path in sorted(self.root.rglob(folder_name)):
                if path.is_dir() and self._is_model_folder(path):
                    return path
        return None

    def _is_model_folder(self, path: Path) -> bool:
        """An unpacked diffusers model: model_index.json plus weights; not a config override."""
        if not (path / "model_index.json").is_file():
            return False
        configs = {self._override_folder(folder).resolve() for folder in self._overrides().values()}
        if path.resolve() in configs:
            return False
        return any(f.suffix.lower() in WEIGHT_SUFFIXES for f in path.rglob("*") if f.is_file())

    def _by_sha256(self, card: ModelCard) -> Path | None:
        expected = card.file.sha256.lower()
        for path in self._candidates():
            if self.hashes.sha256(path) == expected:
                return path
        return None

    def find(self, card: ModelCard) -> Path:
        """Locate the card's file; FileNotFoundError names the card, file and download URL."""
        found: Path | None = None
        if self.match in ("name", "name_or_sha256"):
            found = self._by_name(card)
        if found is None and self.match in ("sha256", "name_or_sha256"):
            found = self._by_sha256(card)
        if found is None:
            raise FileNotFoundError(
                f"weights for {card.type} {card.display_name!r} (version {card.version_id}) "
                f"are not in the model store {self.root}: expected {card.file.name} "
                f"(sha256 {card.file.sha256.upper()}); download it from {card.file.url} "
                f"into {self.root}"
            )
        return found

    def check(self, card: ModelCard, path: Path) -> None:
        """Refuse pickle formats unless allowed, and damaged safetensors; verify the SHA256.

        An unpacked diffusers folder gets the same checks on every weight file inside it (its
        card's SHA256 is that of Civitai's zip, so it is not compared). Raises ValueError.
        """
        if path.is_dir():
            for file in sorted(path.rglob("*")):
                if file.is_file() and file.suffix.lower() in (*WEIGHT_SUFFIXES, *PICKLE_SUFFIXES):
                    self._check_file(file)
            return
        self._check_file(path)
        if self.verify_hash:
            actual = self.hashes.sha256(path)
            expected = card.file.sha256.lower()
            if actual != expected:
                raise ValueError(
                    f"SHA256 mismatch for {path}: file has {actual.upper()}, card "
                    f"{card.display_name!r} (version {card.version_id}) expects "
                    f"{expected.upper()}; the file is damaged or another version; "
                    f"download it again from {card.file.url}"
                )

    def _check_file(self, path: Path) -> None:
        """Refuse one weight file that may be a pickle (unless allowed) or damaged safetensors."""
        # Judged by content, not by name or card: anything but real safetensors may be a pickle.
        pickled = path.suffix.lower() in PICKLE_SUFFIXES or not is_safetensors_file(path)
        if pickled and not self.allow_pickle:
            raise ValueError(
                f"refusing to load {path}: pickle formats (.ckpt, .pt, .pth, .bin) can run "
                "code when loaded; use the SafeTensor file of the model, or set allow_pickle=True"
            )
        if not pickled or path.suffix.lower() == ".safetensors":
            problem = safetensors_problem(path)
            if problem is not None:
                raise ValueError(
                    f"{path} is not a loadable safetensors file: {problem}; download it again"
                )

    def resolve(self, card: ModelCard) -> Path:
        """Find and check the card's weights; the path is safe to load."""
        path = self.find(card)
        try:
            self.check(card, path)
        except ValueError:
            # A same-named file of another version: the right one may sit elsewhere in the store.
            if not (self.verify_hash and self.match == "name_or_sha256"):
                raise
            other = self._by_sha256(card)
            if other is None:
                raise
            self.check(card, other)
            return other
        return path

    def config_dir(self, path: Path, base_model: str) -> Path:
        """The pipeline config folder of a checkpoint: the store's override, else packaged."""
        overrides = self._overrides()
        name = path.name
        if name in overrides:
            folder = self._override_folder(overrides[name])
            if not (folder / "model_index.json").is_file():
                raise FileNotFoundError(
                    f"config folder {folder} for {name} (from {self.root / STORE_CONFIG}) "
                    "has no model_index.json"
                )
            return folder
        return packaged_config_dir(base_model)

    def _override_folder(self, value: str) -> Path:
        folder = Path(value).expanduser()
        return folder if folder.is_absolute() else self.root / folder

    def _overrides(self) -> dict[str, str]:
        path = self.root / STORE_CONFIG
        if not path.is_file():
            return {}
        data = json.loads(path.read_text(encoding="utf-8"))
        configs = data.get("configs", {})
        if not isinstance(configs, dict):
            raise ValueError(f"{path}: 'configs' must map file names to config folders")
        return {str(k): str(v) for k, v in configs.items()}
