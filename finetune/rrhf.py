"""RRHF of the planner (config/trainer pair after trl's patterns): rank responses by reward.

Each group holds one prompt and n responses with rewards s_i. The model's score of a response is
its length-normalised log-likelihood p_i = sum_t log P(r_t | x, r_<t) / |r| (what rank mode
scores at run time), and the loss of a group is

    L = sum_{s_i < s_j} max(0, p_i - p_j)  +  ce_weight * (-p_best)

(hinge ranking loss, and the cross-entropy of the best response, length-normalised as in the
RRHF reference). A batch's loss is the mean of its groups' losses, so any batch size gives the
same objective; the reference implementation mixes groups unless the batch size is 1.
The prompt runs once per group and its KV cache is shared by the n responses.

Run (catalog reward over the ranker's candidates, on top of the SFT adapter):

    diffagent finetune rrhf --catalog /tmp/catalog-full --index-dir IDX --sft ADAPTER \
        --out OUT --reward catalog --candidates 2 --max-examples 300
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field
from transformers import Trainer, TrainingArguments

from diffagent.finetune.data import check_groups, read_jsonl, read_pairs, write_jsonl
from diffagent.finetune.sft import (
    TrainingRunConfig,
    last_checkpoint,
    load_base,
    lora_config,
    wall_clock,
    write_log,
)

GROUPS_FILE = "groups.jsonl"


@dataclass
class RRHFConfig(TrainingArguments):
    """TrainingArguments plus RRHF's own knobs (trl's config pattern)."""

    ce_weight: float = field(default=1.0, metadata={"help": "Weight of the best response's CE."})
    margin: float = field(default=0.0, metadata={"help": "Hinge margin: max(0, p_i - p_j + m)."})
    share_prompt: bool = field(
        default=True, metadata={"help": "Run the prompt once per group (KV cache shared)."}
    )
    max_prompt_length: int = field(default=384, metadata={"help": "Prompt tokens kept (left)."})
    max_response_length: int = field(default=64, metadata={"help": "Response tokens kept."})
    remove_unused_columns: bool = False


class GroupCollator:
    """Tokenise groups: prompt ids under the chat template, response ids, rewards."""

    def __init__(self, tokenizer: Any, max_prompt: int = 384, max_response: int = 64) -> None:
        self.tokenizer = tokenizer
        self.max_prompt = max_prompt
        self.max_response = max_response

    def __call__(self, groups: list[dict[str, Any]]) -> dict[str, Any]:
        """A batch: lists (one entry per group) of prompt ids, response ids and scores."""
        import torch

        prompts, responses, scores = [], [], []
        for group in groups:
            ids = self.tokenizer.apply_chat_template(
                group["prompt"], add_generation_prompt=True, tokenize=True
            )
            ids = list(ids["input_ids"] if hasattr(ids, "keys") else ids)
            prompts.append(torch.tensor(ids[-self.max_prompt :], dtype=torch.long))
            rows = []
            for text in group["responses"]:
                tokens = self.tokenizer(text, add_special_tokens=False)["input_ids"]
                if not tokens:
                    raise ValueError("an RRHF response is empty")
                rows.append(torch.tensor(tokens[: self.max_response], dtype=torch.long))
            responses.append(rows)
            scores.append(torch.tensor(group["scores"], dtype=torch.float32))
        return {"prompt_ids": prompts, "response_ids": responses, "scores": scores}


def response_logps(
    model: Any, prompt: Any, responses: list[Any], share_prompt: bool = True
) -> tuple[Any, Any]:
    """Sum of token log-probs of each response after the prompt, and the response lengths."""
    import torch

    width = max(len(r) for r in responses)
    n = len(responses)
    ids = torch.zeros((n, width), dtype=torch.long)
    mask = torch.zeros((n, width), dtype=torch.bool)
    for row, tokens in enumerate(responses):
        ids[row, : len(tokens)] = tokens
        mask[row, : len(tokens)] = True
    lengths = mask.sum(dim=1)
    if not share_prompt:
        # Plain full sequences (right padding under a causal mask changes no real position).
        full = torch.cat([prompt.expand(n, -1), ids], dim=1)
        logits = model(input_ids=full).logits[:, len(prompt) - 1 : -1]
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        picked = logprobs.gather(-1, ids.unsqueeze(-1)).squeeze(-1)
        return (picked * mask).sum(dim=1), lengths
    from transformers import DynamicCache

    out = model(input_ids=prompt.unsqueeze(0), cache=DynamicCache(), use_cache=True)
    first = torch.log_softmax(out.logits[0, -1].float(), dim=-1)[ids[:, 0]]
    total = first
    if width > 1:
        cache = out.cache
        cache.batch_repeat_interleave(n)
        positions = torch.arange(len(prompt), len(prompt) + width - 1).expand(n, -1)
        rest = model(input_ids=ids[:, :-1], cache=cache, position_ids=positions, use_cache=True)
        logprobs = torch.log_softmax(rest.logits.float(), dim=-1)
        picked = logprobs.gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
        total = total + (picked * mask[:, 1:]).sum(dim=1)
    return total, lengths


def group_loss(
    logps: Any, lengths: Any, scores: Any, *, ce_weight: float = 1.0, margin: float = 0.0
) -> tuple[Any, Any, Any]:
    """RRHF loss of one group: (total, rank part, ce part) from summed log-probs and rewards."""
    import torch

    p = logps / lengths
    worse = scores.unsqueeze(1) < scores.unsqueeze(0)  # worse[i, j]: s_i < s_j
    hinge = torch.relu(p.unsqueeze(1) - p.unsqueeze(0) + margin)
    rank = (hinge * worse).sum()
    ce = -p[int(torch.argmax(scores))]
    return rank + ce_weight * ce, rank, ce


class RRHFTrainer(Trainer):
    """Trainer on RRHF groups; `compute_loss` is the mean of the groups' RRHF losses."""

    def __init__(
        self,
        model: Any,
        args: RRHFConfig,
        train_dataset: Any,
        processing_class: Any,
        peft_config: Any = None,
        callbacks: list[Any] | None = None,
    ) -> None:
        if peft_config is not None:
            from peft import get_peft_model

            model = get_peft_model(model, peft_config)
        collator = GroupCollator(processing_class, args.max_prompt_length, args.max_response_length)
        super().__init__(
            model=model,
            args=args,
            train_dataset=train_dataset,
            data_collator=collator,
            processing_class=processing_class,
            callbacks=callbacks,
        )
        self.rrhf_metrics: dict[str, list[float]] = {"rank_loss": [], "ce_loss": []}

    def batch_loss(self, model: Any, inputs: dict[str, Any]) -> tuple[Any, Any, Any]:
        """Mean RRHF loss over the batch's groups, and the mean rank and CE parts."""
        import torch

        args: RRHFConfig = self.args  # type: ignore[assignment]
        totals, ranks, ces = [], [], []
        for prompt, responses, scores in zip(
            inputs["prompt_ids"], inputs["response_ids"], inputs["scores"], strict=True
        ):
            logps, lengths = response_logps(model, prompt, responses, args.share_prompt)
            total, rank, ce = group_loss(
                logps, lengths, scores, ce_weight=args.ce_weight, margin=args.margin
            )
            totals.append(total)
            ranks.append(rank)
            ces.append(ce)
        return torch.stack(totals).mean(), torch.stack(ranks).mean(), torch.stack(ces).mean()

    def compute_loss(
        self,
        model: Any,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> Any:
        """The batch's RRHF loss (groups averaged, never mixed)."""
        loss, rank, ce = self.batch_loss(model, inputs)
        self.rrhf_metrics["rank_loss"].append(float(rank.detach()))
        self.rrhf_metrics["ce_loss"].append(float(ce.detach()))
        return (loss, {}) if return_outputs else loss

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        """Add the mean rank and CE parts since the last log."""
        for key, values in self.rrhf_metrics.items():
            if values:
                logs[key] = sum(values) / len(values)
                values.clear()
        super().log(logs, *args, **kwargs)


class RRHFRunConfig(TrainingRunConfig):
    """What `diffagent finetune rrhf` does: build groups, then train on them."""

    sft: Path | None = Field(default=None, description="SFT adapter to continue from.")
    index_dir: Path | None = Field(
        default=None, description="Ranked index (candidates); None: the lexical first stage."
    )
    reward: Literal["catalog", "unified"] = "catalog"
    candidates: int = Field(default=2, ge=0, description="m samples from the SFT model.")
    ranker_k: int = Field(default=6, ge=1, description="Ranker cards per prompt.")
    gold: bool = Field(
        default=True, description="Put the pair's own card among the ranker's (catalog reward)."
    )
    seeds: int = Field(default=2, ge=1, description="k images per response (unified).")
    groups: Path | None = Field(default=None, description="Existing groups.jsonl to train on.")
    ray: bool = False
    groups_only: bool = Field(default=False, description="Build OUT/groups.jsonl and stop.")
    max_examples: int | None = Field(default=300, ge=1, description="Train pairs (prompts).")
    lr: float = Field(default=5e-5, gt=0)
    batch_size: int = Field(default=1, ge=1)
    save_steps: int = Field(default=25, ge=1)


def load_policy(config: RRHFRunConfig) -> tuple[Any, Any, Any]:
    """(model, tokenizer, peft_config): the SFT adapter made trainable, or a fresh LoRA."""
    model, tokenizer = load_base(config.model_dir, config.threads)
    if config.sft is None:
        return model, tokenizer, lora_config(config.lora, model.config.num_hidden_layers)
    from peft import PeftModel

    return PeftModel.from_pretrained(model, config.sft, is_trainable=True), tokenizer, None


def build_groups(config: RRHFRunConfig, model: Any, tokenizer: Any) -> list[dict[str, Any]]:
    """RRHF groups for train pairs: candidates (SFT samples, ranker, default) and rewards."""
    from diffagent.finetune.candidates import (
        first_stage_source,
        model_sampler,
        ranker_source,
        ranker_train_images,
        with_gold,
    )
    from diffagent.finetune.ray_jobs import RewardSpec, build_groups_local, build_groups_ray
    from diffagent.index.catalog import Catalog

    catalog = Catalog.load(config.catalog)
    pairs = [p for p in read_pairs(config.catalog, "train") if catalog.get(p.version_id)]
    if config.index_dir is not None:
        from diffagent.index.search import CatalogIndex

        index = CatalogIndex.open(catalog.directory, config.index_dir)
        seen = ranker_train_images(index)
        pairs = [p for p in pairs if p.image_id not in seen]
        ranked = ranker_source(index, config.ranker_k)
    else:
        ranked = first_stage_source(catalog, config.ranker_k)
    if config.max_examples is not None and len(pairs) > config.max_examples:
        pairs = random.Random(config.seed).sample(pairs, config.max_examples)
    if config.gold:
        ranked = with_gold(ranked, catalog, config.ranker_k)
    sampler = model_sampler(model, tokenizer, "rank") if config.candidates else None
    spec = RewardSpec(config.reward, config.catalog, config.seeds, *_image_settings(config))
    n = config.ranker_k + config.candidates
    if config.ray:
        return build_groups_ray(pairs, catalog, ranked, sampler, spec, m=config.candidates, n=n)
    reward = spec.build(catalog)
    return build_groups_local(pairs, catalog, ranked, sampler, reward, m=config.candidates, n=n)


def _image_settings(config: RRHFRunConfig) -> tuple[Any, Any]:
    """Generation and scoring settings (DIFFAGENT_* variables) for the unified reward."""
    if config.reward != "unified":
        return None, None
    from diffagent.agent.settings import Settings

    settings = Settings()
    if settings.generation is None or settings.scoring is None:
        raise ValueError(
            "reward 'unified' needs weights: set DIFFAGENT_GENERATION__MODEL_STORE and the "
            "DIFFAGENT_SCORING__* paths, with DIFFAGENT_SCORING__CACHE_PATH"
        )
    return settings.generation, settings.scoring


def build_rrhf_trainer(
    config: RRHFRunConfig,
    groups: list[dict[str, Any]],
    model: Any,
    tokenizer: Any,
    peft_config: Any = None,
) -> RRHFTrainer:
    """RRHFTrainer over the groups with checkpoints in OUT/checkpoints."""
    from datasets import Dataset

    check_groups(groups)
    args = RRHFConfig(
        output_dir=str(config.out / "checkpoints"),
        num_train_epochs=config.epochs,
        max_steps=config.max_steps or -1,
        per_device_train_batch_size=config.batch_size,
        learning_rate=config.lr,
        lr_scheduler_type="cosine",
        warmup_steps=0.05,
        logging_steps=1,
        save_steps=config.save_steps,
        save_total_limit=2,
        use_cpu=True,
        bf16=config.bf16,
        seed=config.seed,
        report_to=[],
        dataloader_num_workers=0,
    )
    callbacks = []
    if config.max_minutes or config.stop_at_step:
        callbacks.append(wall_clock(config.max_minutes, config.stop_at_step))
    rows = [{k: g[k] for k in ("prompt", "responses", "scores")} for g in groups]
    return RRHFTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=callbacks,
    )


def run_rrhf(config: RRHFRunConfig) -> dict[str, Any]:
    """Build (or read) the groups, train, save the adapter and its log in OUT."""
    started = time.perf_counter()
    model, tokenizer, peft_config = load_policy(config)
    groups_path = config.groups or config.out / GROUPS_FILE
    if groups_path.is_file():
        groups = read_jsonl(groups_path)
    else:
        model.eval()
        groups = build_groups(config, model, tokenizer)
        write_jsonl(groups, groups_path)
    built = time.perf_counter()
    if config.groups_only:
        size = check_groups(groups)
        return {"groups": len(groups), "responses_per_group": size, "path": str(groups_path)}
    trainer = build_rrhf_trainer(config, groups, model, tokenizer, peft_config)
    resume = last_checkpoint(config.out / "checkpoints") if config.resume else None
    result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    policy: Any = trainer.model
    policy.save_pretrained(str(config.out))
    report = {
        "out": str(config.out),
        "groups": len(groups),
        "responses_per_group": check_groups(groups),
        "steps": int(result.global_step),
        "train_loss": float(result.training_loss),
        "resumed_from": str(resume) if resume else None,
        "group_minutes": round((built - started) / 60, 2),
        "minutes": round((time.perf_counter() - started) / 60, 2),
    }
    write_log(config.out, trainer.state.log_history, report, config.model_dump(mode="json"))
    return report


def read_groups(path: Path) -> list[dict[str, Any]]:
    """RRHF groups from a JSON-lines file, checked."""
    groups = read_jsonl(path)
    check_groups(groups)
    return groups
