"""Subcommands of the tools area (thin: parse arguments, call the library, print)."""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path
from typing import Any

from diffagent.tools.exports import EXPORT_FORMATS


def register(commands: Any) -> None:
    """Add `generate`, `export` and `testing make-tiny-weights` to the top-level parser."""
    generate = commands.add_parser("generate", help="generate images for a T2I API JSON file")
    generate.add_argument("--api", type=Path, required=True, metavar="API.json")
    generate.add_argument("--out", type=Path, required=True, metavar="DIR")
    generate.add_argument("--seeds", type=int, default=3, help="k seeds, counting up from api.seed")
    generate.add_argument(
        "--model-store",
        type=Path,
        default=None,
        metavar="DIR",
        help="folder of downloaded weights "
        "(default: $DIFFAGENT_GENERATION__MODEL_STORE, else <data dir>/models)",
    )
    generate.add_argument(
        "--cards",
        type=Path,
        nargs="+",
        default=None,
        metavar="CARDS.jsonl",
        help="card files for the API's versions (default: <store>/cards.jsonl, then the starter)",
    )
    generate.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    generate.add_argument("--allow-pickle", action="store_true", help="load .ckpt/.pt/.bin files")
    generate.add_argument("--no-verify-hash", action="store_true", help="skip SHA256 checks")
    generate.set_defaults(handler=_generate)

    export = commands.add_parser("export", help="a T2I API as diffusers code, A1111 or ComfyUI")
    export.add_argument("--api", type=Path, required=True, metavar="API.json")
    export.add_argument("--to", choices=EXPORT_FORMATS, required=True)
    export.add_argument(
        "--cards",
        type=Path,
        nargs="+",
        default=None,
        metavar="CARDS.jsonl",
        help="card files giving the real file names (default: names made from model names)",
    )
    export.set_defaults(handler=_export)

    testing = commands.add_parser("testing", help="helpers for offline tests and demos")
    sub = testing.add_subparsers(dest="testing_command", required=True, metavar="ACTION")
    tiny = sub.add_parser(
        "make-tiny-weights",
        help="tiny random SD 1.5/SDXL checkpoints, LoRAs and scorer weights, in official formats",
    )
    tiny.add_argument("dir", type=Path, metavar="DIR")
    tiny.set_defaults(handler=_make_tiny_weights)


def _read_api(path: Path) -> Any:
    from pydantic import ValidationError

    from diffagent.api import T2IApi

    if not path.is_file():
        raise FileNotFoundError(f"no API file at {path}")
    try:
        return T2IApi.model_validate_json(path.read_text(encoding="utf-8"))
    except ValidationError as error:
        problems = "; ".join(
            (".".join(str(part) for part in err["loc"]) + ": " if err["loc"] else "") + err["msg"]
            for err in error.errors()
        )
        raise ValueError(f"invalid API file {path}: {problems}") from None


def _load_cards(paths: list[Path]) -> dict[int, Any]:
    from diffagent.cards import read_cards

    cards: dict[int, Any] = {}
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"no card file at {path}")
        cards.update({card.version_id: card for card in read_cards(path)})
    return cards


def _card(cards: dict[int, Any], version_id: int | None, what: str) -> Any:
    from diffagent.index.catalog import Catalog, starter_catalog_dir

    if version_id is None:
        raise ValueError(f"the API names no version_id for its {what}")
    if version_id in cards:
        return cards[version_id]
    card = Catalog.load(starter_catalog_dir()).get(version_id)
    if card is None:
        raise ValueError(
            f"no card for {what} version {version_id}; pass the catalog's cards with --cards"
        )
    return card


def _generate(args: argparse.Namespace) -> int:
    from PIL.PngImagePlugin import PngInfo

    from diffagent.agent.settings import Settings
    from diffagent.tools.exports import a1111_infotext
    from diffagent.tools.generate import GenerationConfig, Generator
    from diffagent.tools.store import default_model_store

    if args.seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {args.seeds}")
    api = _read_api(args.api)
    configured = Settings().generation
    store = args.model_store or (configured.model_store if configured else default_model_store())
    card_files = args.cards or [p for p in [store / "cards.jsonl"] if p.is_file()]
    cards = _load_cards(card_files)
    checkpoint_id = api.checkpoint.version_id if api.checkpoint else api.version_id
    checkpoint = _card(cards, checkpoint_id, "checkpoint")
    loras = [_card(cards, lora.version_id, f"LoRA {lora.name!r}") for lora in api.loras]
    generator = Generator(
        GenerationConfig(
            model_store=store,
            device=args.device,
            allow_pickle=args.allow_pickle,
            verify_hash=not args.no_verify_hash,
        )
    )
    base = api.seed if api.seed is not None else 0
    seeds = [base + offset for offset in range(args.seeds)]
    images = generator.generate(api, seeds, checkpoint, loras)
    args.out.mkdir(parents=True, exist_ok=True)
    files = {card.version_id: card.file.name for card in [checkpoint, *loras]}
    for seed, image in zip(seeds, images, strict=True):
        path = args.out / f"seed-{seed}.png"
        info = PngInfo()
        info.add_text("parameters", a1111_infotext(api, seed, files))  # A1111's PNG metadata
        image.save(path, pnginfo=info)
        print(path)
    return 0


def _export(args: argparse.Namespace) -> int:
    from diffagent.tools.exports import export_text

    api = _read_api(args.api)
    files = None
    if args.cards:
        files = {vid: card.file.name for vid, card in _load_cards(args.cards).items()}
    print(export_text(api, args.to, files))
    return 0


def _make_tiny_weights(args: argparse.Namespace) -> int:
    from diffagent.tools.testing.tiny import make_tiny_weights

    paths = make_tiny_weights(args.dir)
    if importlib.util.find_spec("diffagent.tools.testing.score_tiny") is not None:
        from diffagent.tools.testing.score_tiny import make_tiny_scorer_weights

        paths.update(make_tiny_scorer_weights(args.dir))
    print(json.dumps({name: str(path) for name, path in sorted(paths.items())}, indent=2))
    return 0
