"""Local diffusers pipeline config folders for `from_single_file(config=...)`, fully offline.

The small JSON configs ship in `diffagent/tools/configs/{sd15,sdxl}`; the CLIP BPE tokenizer files
(`vocab.json`, `merges.txt`) are built from the vocabulary that ships inside open_clip, once, into a
cache folder under `user_data_dir()`.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
from importlib import resources
from pathlib import Path

from diffagent.base_models import BASE_MODELS
from diffagent.paths import user_data_dir

PACKAGED_CONFIGS: dict[str, str] = {name: spec.config_folder for name, spec in BASE_MODELS.items()}
_N_MERGES = 49152 - 256 - 2  # CLIP's merge count, as in open_clip's SimpleTokenizer


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte -> printable unicode table."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in chars), strict=True))


def write_clip_tokenizer_files(folder: Path) -> None:
    """Write CLIP `vocab.json` and `merges.txt` into a folder, from open_clip's BPE vocabulary."""
    import open_clip.tokenizer

    bpe_path = Path(open_clip.tokenizer.default_bpe())
    lines = gzip.open(bpe_path).read().decode("utf-8").split("\n")[1 : _N_MERGES + 1]
    merges = [tuple(line.split()) for line in lines]
    vocab = list(_bytes_to_unicode().values())
    vocab = vocab + [token + "</w>" for token in vocab]
    vocab += ["".join(merge) for merge in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(
        json.dumps({token: index for index, token in enumerate(vocab)}, ensure_ascii=False),
        encoding="utf-8",
    )
    merges_text = "#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n"
    (folder / "merges.txt").write_text(merges_text, encoding="utf-8")


def complete_config_folder(folder: Path) -> Path:
    """Add tokenizer files to every `tokenizer*/` subfolder that lacks them; return the folder."""
    for sub in sorted(folder.glob("tokenizer*")):
        if sub.is_dir() and not (sub / "merges.txt").is_file():
            write_clip_tokenizer_files(sub)
    return folder


def packaged_config_dir(base_model: str) -> Path:
    """A complete local config folder for a base model ('SD 1.5' or 'SDXL 1.0')."""
    if base_model not in PACKAGED_CONFIGS:
        raise ValueError(
            f"no pipeline config for base model {base_model!r}; allowed: "
            + ", ".join(PACKAGED_CONFIGS)
        )
    name = PACKAGED_CONFIGS[base_model]
    source = Path(str(resources.files("diffagent.tools") / "configs" / name))
    digest = hashlib.sha256()
    for path in sorted(source.rglob("*.json")):
        digest.update(path.relative_to(source).as_posix().encode())
        digest.update(path.read_bytes())
    target = user_data_dir() / "pipeline-configs" / f"{name}-{digest.hexdigest()[:12]}"
    if not (target / "model_index.json").is_file():
        staging = target.with_name(target.name + ".tmp")
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(source, staging)
        complete_config_folder(staging)
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    return target
