"""The catalog build: raw Civitai items -> filtered cards, instruction/API pairs, splits, stats."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from tqdm import tqdm

from diffagent.api import CheckpointRef, LoraRef, T2IApi
from diffagent.base_models import BASE_MODELS, DEFAULT_CFG, DEFAULT_LORA_WEIGHT, DEFAULT_STEPS
from diffagent.cards import CardFile, CardStats, ModelCard, RecommendedParams, write_cards
from diffagent.index.builder.civitai import attach_images, file_format, file_hashes, iter_models
from diffagent.index.builder.describe import (
    CardFacts,
    DescriptionRewriter,
    TemplateRewriter,
    distinctive_terms,
)
from diffagent.index.builder.evidence import EVIDENCE_FILE, version_evidence, write_evidence
from diffagent.index.builder.filters import (
    FilterConfig,
    PromptGuard,
    SelectedVersion,
    StageCounts,
    select_versions,
)
from diffagent.index.builder.reverse_map import (
    CheckpointHashes,
    MappingConfig,
    RawPair,
    map_version,
    most_common,
    strip_extra_network_tags,
)
from diffagent.index.builder.splits import SPLITS, SplitConfig, dedupe, split_by_group
from diffagent.samplers import DEFAULT_SAMPLER

CARDS_FILE = "cards.jsonl"
STATS_FILE = "stats.json"
PAIRS_DIR = "pairs"


class BuildConfig(BaseModel):
    """Everything that decides the build's output."""

    model_config = ConfigDict(extra="forbid")

    filters: FilterConfig = Field(default_factory=FilterConfig)
    mapping: MappingConfig = Field(default_factory=MappingConfig)
    splits: SplitConfig = Field(default_factory=SplitConfig)
    keywords_top_k: int = Field(default=12, ge=0, le=50)
    progress: bool = True


@dataclass
class BuildResult:
    """Cards, pairs by split and the statistics of one build."""

    cards: list[ModelCard]
    pairs: dict[str, list[dict[str, Any]]]
    stats: dict[str, Any] = field(default_factory=dict)
    evidence: list[tuple[int, list[tuple[int, str]]]] = field(default_factory=list)
    """(version id, [(image id, prompt)]) of every card: all its kept SFW sample prompts."""


def air_urn(base_model: str, model_type: str, model_id: int, version_id: int) -> str:
    """Civitai AIR URN of a version, e.g. urn:air:sd1:lora:civitai:123@456."""
    ecosystem = BASE_MODELS[base_model].air_ecosystem
    return f"urn:air:{ecosystem}:{model_type.lower()}:civitai:{model_id}@{version_id}"


def build_catalog(
    inputs: Sequence[Path],
    config: BuildConfig,
    rewriter: DescriptionRewriter | None = None,
    images: Sequence[Path] = (),
) -> BuildResult:
    """Run the whole build in memory; see `write_catalog` to save it.

    `images` are optional JSON Lines of crawled `/api/v1/images` items added to their versions.
    """
    started = time.perf_counter()
    rewriter = rewriter or TemplateRewriter()
    counts = StageCounts()
    mapping_counts: dict[str, int] = {}
    models = iter_models(inputs)
    if images:
        models = attach_images(models, images, mapping_counts)
    selected = select_versions(models, config.filters, counts, progress=config.progress)
    checkpoints = [s for s in selected if s.model.get("type") == "Checkpoint"]
    defaults = _default_checkpoints(checkpoints, config.mapping)
    hashes = CheckpointHashes(checkpoints)

    raw: list[RawPair] = []
    for item in tqdm(selected, desc="map images", unit=" versions", disable=not config.progress):
        raw.extend(map_version(item, hashes, config.mapping, defaults, mapping_counts))
    counts.images["with_prompt"] = counts.images.get("prompt_guard", 0) - mapping_counts.get(
        "dropped_no_prompt", 0
    )
    counts.images["base_resolved"] = len(raw)
    raw = dedupe(raw, key=lambda p: (p.version_id, " ".join(p.prompt.lower().split())))
    counts.images["deduplicated"] = len(raw)
    split = split_by_group(raw, lambda p: p.image_id, config.splits)

    cards = _make_cards(selected, split["train"], defaults, config, rewriter)
    by_id = {card.version_id: card for card in cards}
    min_chars = config.mapping.min_prompt_chars
    evidence = [
        (item.version_id, version_evidence(item, min_chars))
        for item in selected
        if item.version_id in by_id
    ]
    pairs = {
        name: [
            _pair_record(p, by_id)
            for p in tqdm(split[name], desc=f"pairs {name}", disable=not config.progress)
        ]
        for name in SPLITS
    }
    stats = {
        "inputs": [str(path) for path in inputs],
        "image_inputs": [str(path) for path in images],
        "config": config.model_dump(mode="json", exclude={"progress"}),
        "models": counts.models,
        "versions": counts.versions,
        "images": counts.images,
        "mapping": dict(sorted(mapping_counts.items())),
        "cards": len(cards),
        "cards_by_type": dict(Counter(card.type for card in cards)),
        "cards_by_base": dict(Counter(card.base_model for card in cards)),
        "pairs": {name: len(records) for name, records in pairs.items()},
        "evidence_prompts": sum(len(prompts) for _, prompts in evidence),
        "default_checkpoints": defaults,
        "seconds": round(time.perf_counter() - started, 1),
    }
    return BuildResult(cards=cards, pairs=pairs, stats=stats, evidence=evidence)


def _default_checkpoints(
    checkpoints: list[SelectedVersion], config: MappingConfig
) -> dict[str, int]:
    """Base model -> default checkpoint id: configured, else the most downloaded checkpoint."""
    known = {item.version_id: str(item.version["baseModel"]) for item in checkpoints}
    for base, version_id in config.default_checkpoints.items():
        if known.get(version_id) != base:
            raise ValueError(
                f"default checkpoint {version_id} for {base!r} is not a {base} checkpoint "
                "kept by the filters"
            )
    result = dict(config.default_checkpoints)
    for item in sorted(checkpoints, key=lambda s: (-s.downloads, s.version_id)):
        result.setdefault(str(item.version["baseModel"]), item.version_id)
    return result


def _make_cards(
    selected: list[SelectedVersion],
    train: list[RawPair],
    defaults: dict[str, int],
    config: BuildConfig,
    rewriter: DescriptionRewriter,
) -> list[ModelCard]:
    """One card per selected version; keywords and parameter statistics from train pairs only."""
    train_by_version: dict[int, list[RawPair]] = {}
    for pair in train:
        train_by_version.setdefault(pair.version_id, []).append(pair)
    guard = PromptGuard(config.filters.nsfw_terms if config.filters.prompt_guard else [])
    documents = [[p.prompt for p in train_by_version.get(s.version_id, [])] for s in selected]
    keywords = distinctive_terms(
        documents, config.keywords_top_k, keep=lambda term: not guard.is_explicit(term)
    )
    cards = []
    for item, terms in tqdm(
        list(zip(selected, keywords, strict=True)),
        desc="cards",
        unit=" cards",
        disable=not config.progress,
    ):
        model, version, file = item.model, item.version, item.file
        base = str(version["baseModel"])
        model_type = str(model["type"])
        tags = [str(t) for t in model.get("tags") or [] if not guard.is_explicit(str(t))]
        trigger_words = _trigger_words(version.get("trainedWords") or [], guard)
        pairs = train_by_version.get(item.version_id, [])
        facts = CardFacts(
            name=str(model["name"]).strip(),
            version_name=str(version.get("name") or "").strip(),
            type=model_type,
            base_model=base,
            tags=tags,
            trigger_words=trigger_words,
            keywords=terms,
            n_prompts=len(pairs),
        )
        hashes = file_hashes(file)
        model_stats, version_stats = model.get("stats") or {}, version.get("stats") or {}
        cards.append(
            ModelCard(
                version_id=item.version_id,
                model_id=int(model["id"]),
                air=air_urn(base, model_type, int(model["id"]), item.version_id),
                name=facts.name,
                version_name=facts.version_name,
                type=model_type,  # type: ignore[arg-type]
                base_model=base,  # type: ignore[arg-type]
                trigger_words=trigger_words,
                tags=tags,
                keywords=terms,
                description=rewriter.describe(facts),
                stats=CardStats(
                    downloads=int(version_stats.get("downloadCount") or 0),
                    rating=float(version_stats.get("rating") or model_stats.get("rating") or 0),
                    rating_count=int(version_stats.get("ratingCount") or 0),
                    favorites=int(model_stats.get("favoriteCount") or 0),
                    model_downloads=int(model_stats.get("downloadCount") or 0),
                ),
                file=CardFile(
                    name=str(file.get("name") or ""),
                    format=file_format(file),
                    size_kb=float(file.get("sizeKB") or 0.0),
                    sha256=hashes["SHA256"],
                    autov2=hashes.get("AUTOV2") or hashes["SHA256"][:10],
                    url=str(file.get("downloadUrl") or version.get("downloadUrl")),
                ),
                recommended=_recommend(pairs, base, model_type, defaults),
                created_at=version.get("createdAt"),
            )
        )
    return cards


def _trigger_words(words: Iterable[Any], guard: PromptGuard) -> list[str]:
    """Trained words, trimmed, de-duplicated, without explicit ones."""
    result: list[str] = []
    for word in words:
        text = " ".join(strip_extra_network_tags(str(word)).split()).strip(" ,")
        if text and text not in result and not guard.is_explicit(text) and len(text) <= 200:
            result.append(text)
    return result


def _recommend(
    pairs: list[RawPair], base: str, model_type: str, defaults: dict[str, int]
) -> RecommendedParams:
    """Most common parameters over the version's train pairs; base defaults when there are none."""
    is_lora = model_type == "LORA"
    width, height = (
        most_common((p.width, p.height) for p in pairs) or BASE_MODELS[base].default_size
    )
    base_checkpoint = most_common(p.checkpoint_version_id for p in pairs if p.base_resolved)
    return RecommendedParams(
        width=width,
        height=height,
        sampling_method=most_common(p.sampling_method for p in pairs) or DEFAULT_SAMPLER,
        sampling_steps=most_common(p.sampling_steps for p in pairs) or DEFAULT_STEPS,
        cfg_scale=most_common(p.cfg_scale for p in pairs) or DEFAULT_CFG,
        clip_skip=most_common(p.clip_skip for p in pairs),
        negative_prompt=most_common(p.negative_prompt for p in pairs if p.negative_prompt) or "",
        lora_weight=(most_common(p.lora_weight for p in pairs) or DEFAULT_LORA_WEIGHT)
        if is_lora
        else None,
        n_images=len(pairs),
        base_checkpoint_version_id=(base_checkpoint or defaults.get(base)) if is_lora else None,
    )


def _pair_record(pair: RawPair, cards: dict[int, ModelCard]) -> dict[str, Any]:
    """The JSON record of one pair; its api validates as T2IApi."""
    card = cards[pair.version_id]
    checkpoint = None
    loras = []
    if card.type == "LORA":
        assert pair.checkpoint_version_id is not None
        base_card = cards[pair.checkpoint_version_id]
        checkpoint = CheckpointRef(version_id=base_card.version_id, name=base_card.display_name)
        loras = [
            LoraRef(
                version_id=card.version_id,
                name=card.display_name,
                weight=pair.lora_weight if pair.lora_weight is not None else DEFAULT_LORA_WEIGHT,
                base_model=card.base_model,
            )
        ]
    api = T2IApi(
        model=card.display_name,
        type=card.type,
        base_model=card.base_model,
        width=pair.width,
        height=pair.height,
        sampling_method=pair.sampling_method,
        sampling_steps=pair.sampling_steps,
        cfg_scale=pair.cfg_scale,
        model_description=card.description,
        model_id=card.model_id,
        version_id=card.version_id,
        air=card.air,
        checkpoint=checkpoint,
        loras=loras,
        prompt=pair.prompt,
        negative_prompt=pair.negative_prompt,
        seed=pair.seed,
        clip_skip=pair.clip_skip,
    )
    return {
        "id": f"{pair.version_id}-{pair.image_id}",
        "image_id": pair.image_id,
        "instruction": {"prompt": pair.prompt, "negative_prompt": pair.negative_prompt},
        "api": api.model_dump(mode="json"),
        "base_resolved": pair.base_resolved,
    }


def write_catalog(result: BuildResult, out_dir: Path) -> None:
    """Write DIR/cards.jsonl, DIR/pairs/{train,val,test}.jsonl, DIR/evidence.jsonl, stats.json."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_cards(result.cards, out_dir / CARDS_FILE)
    (out_dir / PAIRS_DIR).mkdir(exist_ok=True)
    for name, records in result.pairs.items():
        with (out_dir / PAIRS_DIR / f"{name}.jsonl").open("w", encoding="utf-8") as handle:
            for record in records:
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    write_evidence(result.evidence, out_dir / EVIDENCE_FILE)
    (out_dir / STATS_FILE).write_text(json.dumps(result.stats, indent=2) + "\n", encoding="utf-8")


def format_stats(stats: dict[str, Any]) -> str:
    """Human-readable stage counts (the paper's Figure 2 as a table)."""
    lines = [f"{'stage':<16}{'models':>10}{'versions':>10}"]
    for stage, versions in stats["versions"].items():
        lines.append(f"{stage:<16}{stats['models'].get(stage, 0):>10}{versions:>10}")
    lines.append(f"{'image stage':<16}{'images':>10}")
    for stage, images in stats["images"].items():
        lines.append(f"{stage:<16}{images:>10}")
    lines.append("mapping: " + ", ".join(f"{k}={v}" for k, v in stats["mapping"].items()))
    lines.append(
        f"cards: {stats['cards']} {stats['cards_by_type']}; pairs: "
        + ", ".join(f"{k}={v}" for k, v in stats["pairs"].items())
        + f"; {stats['seconds']} s"
    )
    return "\n".join(lines)
