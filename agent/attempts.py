"""Generation attempts: images saved with thumbnails, one record per attempt, the reply's table."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from diffagent.agent.context import AgentContext
from diffagent.api import T2IApi
from diffagent.paths import user_data_dir


def generate_images(ctx: AgentContext, api: dict[str, Any]) -> tuple[list[str], str | None]:
    """Generate the API's k images and save them with thumbnails: (paths, error or None)."""
    assert ctx.generator is not None
    t2i = T2IApi.model_validate(api)
    card = ctx.catalog.get(t2i.version_id or -1)
    checkpoint = ctx.catalog.get(t2i.checkpoint.version_id) if t2i.checkpoint else card
    loras = [c for lo in t2i.loras if (c := ctx.catalog.get(lo.version_id)) is not None]
    if checkpoint is None:
        return [], "No checkpoint to generate with."
    seeds = ctx.seeds_for(t2i.seed)
    try:
        images = ctx.generator.generate(t2i, seeds, checkpoint, loras)
    except (FileNotFoundError, ValueError) as error:
        return [], f"No images: {error}"
    settings = ctx.settings
    paths, _ = save_images(images, seeds, settings.paths.output_dir, settings.critique.thumbnail_px)
    return paths, None


def score_images(ctx: AgentContext, api: dict[str, Any], paths: list[str]) -> dict[str, Any]:
    """The score report (plain JSON) of an API's images for its prompt."""
    from PIL import Image  # noqa: PLC0415

    assert ctx.scorer is not None
    images = [Image.open(path).convert("RGB") for path in paths]
    # The API is part of the cache key: the same prompt and seed under another API is another image.
    api_key = json.dumps(api, sort_keys=True)
    seeds = ctx.seeds_for(api.get("seed"))
    report = ctx.scorer.score(api["prompt"], images, api_key=api_key, seeds=seeds)
    return report.model_dump(mode="json") if hasattr(report, "model_dump") else dict(report)


def save_images(
    images: list[Any], seeds: list[int], out_dir: Path | None, thumbnail_px: int
) -> tuple[list[str], list[str]]:
    """Write each image (`<id>-<seed>.png`) and its thumbnail (`thumbs/<id>-<seed>.png`)."""
    folder = out_dir or user_data_dir() / "images"
    folder.mkdir(parents=True, exist_ok=True)
    stem = uuid.uuid4().hex[:12]
    paths, thumbs = [], []
    for seed, image in zip(seeds, images, strict=False):
        path = folder / f"{stem}-{seed}.png"
        image.save(path)
        thumb = image.copy()
        thumb.thumbnail((thumbnail_px, thumbnail_px))
        thumb_path = Path(thumbnail_of(str(path)))
        thumb_path.parent.mkdir(exist_ok=True)
        thumb.save(thumb_path)
        paths.append(str(path))
        thumbs.append(str(thumb_path))
    return paths, thumbs


def attempt_record(
    turn: int,
    api: dict[str, Any],
    images: list[str],
    scores: dict[str, Any] | None,
    seconds: float | None,
    error: str | None = None,
) -> dict[str, Any]:
    """One attempt as plain JSON: the card, its parameters and LoRAs, scores, image paths."""
    per_seed = [
        {"seed": image.get("seed"), "unified": image.get("unified")}
        for image in (scores or {}).get("per_image", [])
    ]
    return {
        "turn": turn,
        "version_id": api.get("version_id"),
        "model": api.get("model"),
        "loras": [{"name": lo["name"], "weight": lo["weight"]} for lo in api.get("loras", [])],
        "params": {
            key: api.get(key)
            for key in ("width", "height", "sampling_method", "sampling_steps", "cfg_scale", "seed")
        },
        "unified": (scores or {}).get("unified"),
        "per_seed": per_seed,
        "images": images,
        "thumbnails": [thumbnail_of(path) for path in images],
        "seconds": round(seconds, 3) if seconds is not None else None,
        "kept": False,
        "error": error,
        "api": api,
    }


def thumbnail_of(path: str) -> str:
    """The thumbnail path `save_images` writes for an image (in `thumbs/` beside it)."""
    image = Path(path)
    return str(image.parent / "thumbs" / image.name)


def attempts_table(attempts: list[dict[str, Any]]) -> str:
    """A markdown table of what was tried: card, parameters, scores, thumbnails; best marked."""
    rows = [
        "| # | model | LoRAs | parameters | unified | per seed | thumbnails |",
        "|---|---|---|---|---|---|---|",
    ]
    for number, attempt in enumerate(attempts, 1):
        params = attempt["params"]
        loras = ", ".join(f"{lo['name']} {lo['weight']:g}" for lo in attempt["loras"]) or "-"
        setting = (
            f"{params['width']}x{params['height']}, {params['sampling_method']}, "
            f"{params['sampling_steps']} steps, CFG {params['cfg_scale']:g}"
        )
        unified = attempt["unified"]
        score = f"{unified:.3f}" if unified is not None else (attempt["error"] or "-")
        seeds = " ".join(
            f"{s['seed']}:{s['unified']:.3f}"
            for s in attempt["per_seed"]
            if s["unified"] is not None
        )
        thumbs = " ".join(attempt["thumbnails"]) or "-"
        mark = " (kept)" if attempt.get("kept") else ""
        rows.append(
            f"| {number}{mark} | {_cell(attempt['model'])} | {_cell(loras)} | {setting} | "
            f"{score} | {seeds or '-'} | {_cell(thumbs)} |"
        )
    return "\n".join(rows)


def _cell(text: Any) -> str:
    """A table cell on one line, without pipes that would break the row."""
    return " ".join(str(text).split()).replace("|", "/")
