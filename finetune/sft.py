"""SFT of the planner: a LoRA adapter trained with trl's SFTTrainer on the catalog's train pairs.

Run (the shipped rank-mode adapter, `make planner-adapter`):

    diffagent finetune sft --catalog /tmp/catalog-full --out agent/adapters/planner-rank \
        --max-examples 3000 --max-minutes 40

Loss is on the answer only (prompt-completion rows); val pairs give the eval loss, early stopping
and the best checkpoint; checkpoints go to OUT/checkpoints and a rerun resumes from the last.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field

from diffagent.finetune.data import (
    CandidateSource,
    Format,
    random_candidates,
    read_pairs,
    sft_examples,
)
from diffagent.index.catalog import Catalog

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
LOG_FILE = "training_log.json"


class LoraSettings(BaseModel):
    """The LoRA adapter's shape (r=16 on every linear layer of the top 8 of SmolLM2's 30)."""

    model_config = ConfigDict(extra="forbid")

    r: int = Field(default=16, ge=1)
    alpha: int = Field(default=32, ge=1)
    dropout: float = Field(default=0.05, ge=0.0, lt=1.0)
    target_modules: tuple[str, ...] = LORA_TARGETS
    top_layers: int | None = Field(
        default=8,
        ge=1,
        description="Adapt only the top N decoder layers: the backward pass stops below them "
        "(about half the cost of a step on CPU); None: every layer.",
    )


class TrainingRunConfig(BaseModel):
    """What every training command shares: where, which model, the schedule's caps, the LoRA."""

    model_config = ConfigDict(extra="forbid")

    catalog: Path
    out: Path
    model_dir: Path | None = Field(default=None, description="None: the embedded SmolLM2.")
    epochs: float = Field(default=1.0, gt=0)
    max_steps: int | None = Field(default=None, ge=1)
    max_minutes: float | None = Field(default=None, gt=0, description="Wall-time cap.")
    stop_at_step: int | None = Field(
        default=None,
        ge=1,
        description="Stop after this step, the schedule unchanged (replays a capped run).",
    )
    threads: int | None = Field(default=None, ge=1)
    bf16: bool = Field(default=False, description="bfloat16 autocast (CPUs with AVX512-BF16).")
    seed: int = 0
    resume: bool = True
    lora: LoraSettings = Field(default_factory=LoraSettings)

    @classmethod
    def from_args(cls, args: dict[str, Any]) -> Self:
        """Config from parsed command-line arguments (flags not given keep their defaults)."""
        values = {k: v for k, v in args.items() if k in cls.model_fields and v is not None}
        values["resume"] = not args.get("no_resume", False)
        return cls.model_validate(values)


class SFTRunConfig(TrainingRunConfig):
    """What `diffagent finetune sft` trains: data, model, LoRA and the optimisation."""

    format: Literal["rank", "generate", "both"] = "rank"
    index_dir: Path | None = Field(default=None, description="Ranked index for generate cards.")
    generate_cards: int = Field(
        default=8, ge=1, le=50, description="Candidate cards shown in a generate-format example."
    )
    max_examples: int | None = Field(default=None, ge=1, description="Train pairs used.")
    max_val: int | None = Field(default=64, ge=1, description="Val pairs for the eval loss.")
    lr: float = Field(default=2e-4, gt=0)
    batch_size: int = Field(default=8, ge=1)
    save_steps: int = Field(default=50, ge=1)
    max_length: int = Field(default=384, ge=16, description="Tokens per example (prompt+answer).")
    patience: int = Field(default=4, ge=1, description="Evaluations without improvement.")

    def formats(self) -> tuple[Format, ...]:
        """The answer formats trained."""
        return ("rank", "generate") if self.format == "both" else (self.format,)


def load_base(model_dir: Path | None, threads: int | None = None) -> tuple[Any, Any]:
    """Base causal LM (float32, for training) and its tokenizer; the embedded one by default."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from diffagent.agent.llm_embedded import ensure_cached

    torch.set_num_threads(threads or 1)
    folder = model_dir if model_dir is not None else ensure_cached()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    return model, tokenizer


def lora_config(settings: LoraSettings, num_layers: int | None = None) -> Any:
    """The peft LoraConfig of a causal LM adapter (top layers only where asked)."""
    from peft import LoraConfig

    layers = None
    if settings.top_layers is not None and num_layers is not None:
        layers = list(range(max(0, num_layers - settings.top_layers), num_layers))
    return LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(settings.target_modules),
        layers_to_transform=layers,
        task_type="CAUSAL_LM",
    )


def _candidate_source(config: SFTRunConfig, catalog: Catalog) -> CandidateSource:
    """Generate-format cards: the ranker's top cards with an index, else random ones of a base."""
    if "generate" not in config.formats() or config.index_dir is None:
        return random_candidates(catalog, config.generate_cards)
    from diffagent.finetune.candidates import ranker_source
    from diffagent.index.search import CatalogIndex

    return ranker_source(
        CatalogIndex.open(catalog.directory, config.index_dir), k=config.generate_cards
    )


def build_datasets(config: SFTRunConfig, catalog: Catalog) -> tuple[Any, Any]:
    """Train and val datasets of prompt-completion rows (val pairs only for evaluation)."""
    from datasets import Dataset

    source = _candidate_source(config, catalog)
    train_pairs = read_pairs(config.catalog, "train", limit=config.max_examples, seed=config.seed)
    val_pairs = read_pairs(config.catalog, "val", limit=config.max_val, seed=config.seed)
    train = list(sft_examples(catalog, train_pairs, config.formats(), source))
    val = list(sft_examples(catalog, val_pairs, config.formats(), source))
    if not train:
        raise ValueError(f"no train pairs with a card in {config.catalog}")
    return Dataset.from_list(train), Dataset.from_list(val) if val else None


def build_sft_trainer(
    config: SFTRunConfig, model: Any = None, tokenizer: Any = None, catalog: Catalog | None = None
) -> Any:
    """Trl SFTTrainer with a fresh LoRA on the base model, eval on val, checkpoints in OUT."""
    from transformers import EarlyStoppingCallback
    from trl import SFTConfig, SFTTrainer

    if model is None or tokenizer is None:
        model, tokenizer = load_base(config.model_dir, config.threads)
    catalog = catalog or Catalog.load(config.catalog)
    train, val = build_datasets(config, catalog)
    has_val = val is not None
    args = SFTConfig(
        output_dir=str(config.out / "checkpoints"),
        num_train_epochs=config.epochs,
        max_steps=config.max_steps or -1,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        learning_rate=config.lr,
        lr_scheduler_type="cosine",
        warmup_steps=0.03,
        logging_steps=1,  # steps are slow on CPU: every one is a point of the curve
        save_steps=config.save_steps,
        save_total_limit=2,
        eval_strategy="steps" if has_val else "no",
        eval_steps=config.save_steps,
        load_best_model_at_end=has_val,
        metric_for_best_model="eval_loss",
        greater_is_better=False,
        max_length=config.max_length,
        # Batches of similar lengths: padding is paid for in full on CPU.
        train_sampling_strategy="group_by_length",
        use_cpu=True,
        bf16=config.bf16,
        seed=config.seed,
        report_to=[],
        dataloader_num_workers=0,
        dataset_num_proc=None,
    )
    callbacks: list[Any] = []
    if config.max_minutes or config.stop_at_step:
        callbacks.append(wall_clock(config.max_minutes, config.stop_at_step))
    if has_val:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=config.patience))
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=train,
        eval_dataset=val,
        processing_class=tokenizer,
        peft_config=lora_config(config.lora, model.config.num_hidden_layers),
        callbacks=callbacks,
    )
    cut_examples(len(train), trainer.train_dataset, config.max_length)
    return trainer


def last_checkpoint(folder: Path) -> Path | None:
    """The newest `checkpoint-N` folder under `folder`, or None."""
    found = [p for p in folder.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()]
    return max(found, key=lambda p: int(p.name.split("-")[-1])) if found else None


def run_sft(config: SFTRunConfig, model: Any = None, tokenizer: Any = None) -> dict[str, Any]:
    """Train, save the adapter (best on val) and its training log in OUT; return a summary."""
    started = time.perf_counter()
    trainer = build_sft_trainer(config, model, tokenizer)
    resume = last_checkpoint(config.out / "checkpoints") if config.resume else None
    result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    trainer.model.save_pretrained(str(config.out))
    report = {
        "out": str(config.out),
        "examples": len(trainer.train_dataset),
        "steps": int(result.global_step),
        "train_loss": float(result.training_loss),
        "best_eval_loss": trainer.state.best_metric,
        "resumed_from": str(resume) if resume else None,
        "minutes": round((time.perf_counter() - started) / 60, 2),
    }
    write_log(config.out, trainer.state.log_history, report, config.model_dump(mode="json"))
    return report


def cut_examples(built: int, dataset: Any, max_length: int) -> tuple[int, int]:
    """Examples that `max_length` spoiled: (dropped, cut) of the `built` rows.

    trl cuts every tokenized example at `max_length` from the end, where the answer is, and drops
    those with no answer token left; a kept one that reaches the limit lost part of its answer.
    Both are reported on stderr.
    """
    dropped = built - len(dataset)
    cut = sum(len(ids) >= max_length for ids in dataset["input_ids"])
    if dropped or cut:
        print(
            f"warning: of {built} examples, {dropped} were dropped and {cut} cut short by "
            f"--max-length {max_length} (their answers do not fit): raise --max-length",
            file=sys.stderr,
        )
    return dropped, cut


def write_log(
    out: Path, history: list[dict[str, Any]], summary: dict[str, Any], config: Any
) -> Path:
    """Write OUT/training_log.json: the config, the summary and every logged step."""
    path = out / LOG_FILE
    path.write_text(
        json.dumps({"config": config, "summary": summary, "history": history}, indent=1),
        encoding="utf-8",
    )
    return path


def plot_curve(log_files: list[Path], png: Path, labels: list[str] | None = None) -> Path:
    """Plot train and eval loss against step from training logs into a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(log_files), figsize=(6 * len(log_files), 4), squeeze=False)
    for n, log_file in enumerate(log_files):
        history = json.loads(Path(log_file).read_text(encoding="utf-8"))["history"]
        axis = axes[0][n]
        styles = (("loss", "-"), ("eval_loss", "o-"), ("rank_loss", ":"), ("ce_loss", "--"))
        for key, style in styles:
            points = [(row["step"], row[key]) for row in history if key in row]
            if points:
                axis.plot(*zip(*points, strict=True), style, label=key)
        axis.set_xlabel("step")
        axis.set_ylabel("loss")
        axis.set_title(labels[n] if labels else Path(log_file).parent.name)
        axis.legend()
        axis.grid(alpha=0.3)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png


def wall_clock(minutes: float | None, stop_at_step: int | None = None) -> Any:
    """Trainer callback: stop, with a last checkpoint and evaluation, after `minutes` or a step.

    Stopping at a step leaves the learning-rate schedule as configured, so a run capped by time
    is replayed exactly with `stop_at_step` = the step it reached.
    """
    from transformers import TrainerCallback

    class WallClock(TrainerCallback):  # type: ignore[misc]
        def __init__(self) -> None:
            self.started = time.perf_counter()

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.started = time.perf_counter()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            late = minutes is not None and time.perf_counter() - self.started > minutes * 60
            if late or (stop_at_step is not None and state.global_step >= stop_at_step):
                control.should_training_stop = True
                control.should_save = True
                control.should_evaluate = args.eval_strategy != "no"
            return control

    return WallClock()
