"""Read raw Civitai `/api/v1/models` items from JSON Lines files (plain or gzip), streaming."""

from __future__ import annotations

import gzip
import io
import json
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

GZIP_MAGIC = b"\x1f\x8b"

RawItem = dict[str, Any]


def open_text(path: Path) -> io.TextIOBase:
    """Open a JSON Lines file for reading as text, gunzipping when it starts with the gzip magic."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no Civitai JSON Lines file at {path}")
    with path.open("rb") as probe:
        magic = probe.read(2)
    if magic == GZIP_MAGIC:
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return path.open(encoding="utf-8")  # type: ignore[return-value]


def iter_items(path: Path) -> Iterator[RawItem]:
    """Yield the JSON objects of one JSON Lines file; a bad line is an error naming its place."""
    count = 0
    try:
        for item in _items(path):
            count += 1
            yield item
    except (EOFError, gzip.BadGzipFile, zlib.error, UnicodeDecodeError) as error:
        raise ValueError(
            f"{path}: cannot read past item {count}: the file is truncated or damaged "
            f"({type(error).__name__}: {error})"
        ) from None


def _items(path: Path) -> Iterator[RawItem]:
    """The JSON objects of one file, without the damaged-file mapping."""
    with open_text(path) as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{number}: not a JSON object ({error.msg})") from None
            if not isinstance(item, dict):
                raise ValueError(
                    f"{path}:{number}: expected a JSON object, got {type(item).__name__}"
                )
            yield item


def iter_models(paths: Iterable[Path]) -> Iterator[RawItem]:
    """Yield raw Civitai model items from several files in order (no de-duplication here)."""
    for path in paths:
        for item in iter_items(Path(path)):
            if "modelVersions" not in item:
                raise ValueError(
                    f"{path}: item {item.get('id')!r} has no 'modelVersions'; "
                    "expected raw Civitai /api/v1/models items"
                )
            yield item


def primary_file(version: RawItem) -> RawItem | None:
    """The version's primary file (the first file when none is flagged primary), or None."""
    files = version.get("files") or []
    for file in files:
        if file.get("primary"):
            return dict(file)
    return dict(files[0]) if files else None


def file_format(file: RawItem) -> str:
    """Civitai's format of a file (SafeTensor, PickleTensor, Diffusers, Other); '' when unknown."""
    metadata = file.get("metadata") or {}
    return str(metadata.get("format") or "")


def file_hashes(file: RawItem) -> dict[str, str]:
    """The file's hashes with upper-case keys and values (AUTOV1, AUTOV2, SHA256, ...)."""
    hashes = file.get("hashes") or {}
    return {str(k).upper(): str(v).upper() for k, v in hashes.items() if v}


# Civitai browsing levels (bitmask) of /api/v1/images, mapped to the crawl's image ratings.
_BROWSING_LEVELS = ((1, "None"), (2, "Soft"), (4, "Mature"))
_RATINGS = ("None", "Soft", "Mature", "X")


def image_rating(image: RawItem) -> str:
    """An image's rating as None/Soft/Mature/X, from `nsfw` or the images endpoint's fields.

    `/api/v1/images` items carry `nsfw` as a boolean and the rating in `nsfwLevel` (a name or a
    browsing-level number); a bare `nsfw: true` without a level counts as X.
    """
    for key in ("nsfwLevel", "nsfw"):
        value = image.get(key)
        if isinstance(value, str) and value in _RATINGS:
            return value
        if isinstance(value, int) and not isinstance(value, bool) and key == "nsfwLevel":
            return next((name for level, name in _BROWSING_LEVELS if value == level), "X")
    return "X" if image.get("nsfw") is True else "None"


def attach_images(
    models: Iterable[RawItem], image_paths: Iterable[Path], counts: dict[str, int] | None = None
) -> Iterator[RawItem]:
    """Add crawled `/api/v1/images` items to their versions' sample images.

    An image belongs to the version in its `modelVersionId` (the crawler writes it when the
    crawl was asked for one version); images without it are counted and ignored, because
    `modelVersionIds` lists every resource an image used. Image ids a version already has
    are skipped.
    """
    counts = counts if counts is not None else {}
    by_version: dict[int, list[RawItem]] = {}
    for path in image_paths:
        for image in iter_items(Path(path)):
            version_id = image.get("modelVersionId")
            if not isinstance(version_id, int):
                counts["images_without_version"] = counts.get("images_without_version", 0) + 1
                continue
            by_version.setdefault(version_id, []).append(image)
    for model in models:
        for version in model.get("modelVersions") or []:
            extra = by_version.get(int(version.get("id", -1)), [])
            if not extra:
                continue
            images = list(version.get("images") or [])
            known = {image.get("id") for image in images}
            for image in extra:
                if image.get("id") not in known:
                    known.add(image.get("id"))
                    images.append({**image, "nsfw": image_rating(image)})
                    counts["images_attached"] = counts.get("images_attached", 0) + 1
            version["images"] = images
        yield model
