"""The evaluation report: Tables 1 and 2 as markdown, JSON and matplotlib plots (PNG)."""

from __future__ import annotations

from pathlib import Path

from diffagent.finetune.eval_harness import EvalReport

SCORERS = ("clip", "imagereward", "hps")
_LABELS = {"clip": "CLIP Score", "imagereward": "ImageReward", "hps": "HPS v2"}


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def table1_markdown(report: EvalReport) -> str:
    """Table 1 laid out like the paper: prompt sets down, planners across (percent)."""
    planners = list(dict.fromkeys(row.planner for row in report.table1))
    sets = list(dict.fromkeys(row.prompt_set for row in report.table1))
    cell = {(row.prompt_set, row.planner): row for row in report.table1}
    lines = [
        "Hallucination error before repair, % (lower is better); in brackets: usable JSON %, "
        "n prompts.",
        "",
        "| prompt set | " + " | ".join(planners) + " |",
        "|---|" + "---|" * len(planners),
    ]
    for name in sets:
        cells = []
        for planner in planners:
            row = cell.get((name, planner))
            cells.append(
                "–"
                if row is None
                else f"{_pct(row.hallucination)} ({_pct(row.usable_json)}, n={row.n})"
            )
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "| prompt set | planner | n | JSON object % | usable JSON % | hallucination % "
        "| after repair % | version top-1 % |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in report.table1:
        lines.append(
            f"| {row.prompt_set} | {row.planner} | {row.n} | {_pct(row.json_parsed)} "
            f"| {_pct(row.usable_json)} | {_pct(row.hallucination)} "
            f"| {_pct(row.hallucination_after_repair)} | {_pct(row.version_top1)} |"
        )
    return "\n".join(lines)


def table2_markdown(report: EvalReport) -> str:
    """Table 2 like the paper: raw means x100 per scorer, then normalised means and Eq. 4."""
    lines = [
        "Raw means x 100 as the paper prints them (CLIP Score, ImageReward, HPS v2), then the "
        "normalised means in [0, 1] and the unified metric S (Eq. 4), x 100.",
        "",
        "| prompt set | row | n | CLIP | ImageReward | HPS v2 | CLIP norm | IR norm | HPS norm "
        "| Unified |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in report.table2:
        raw = [f"{100 * row.raw[name]:.1f}" if name in row.raw else "–" for name in SCORERS]
        norm = [_pct(row.normalised.get(name)) for name in SCORERS]
        lines.append(
            f"| {row.prompt_set} | {row.row} | {row.n} | "
            + " | ".join(raw + norm)
            + f" | {_pct(row.unified)} |"
        )
    return "\n".join(lines)


def report_markdown(report: EvalReport, plots: list[str]) -> str:
    """The whole report as markdown (tables, settings, plots)."""
    cfg = report.config
    planners = ", ".join(
        f"{p['name']}"
        + (f" (adapter {p['adapter']})" if p.get("adapter") else "")
        + (f" ({p['model']} at {p['base_url']})" if p.get("base_url") else "")
        for p in cfg["planners"]
    )
    parts = [
        "# DiffAgent evaluation",
        "",
        f"- catalog: `{cfg['catalog_dir']}`; prompt sets: {', '.join(cfg['prompt_sets'])} "
        f"(limit {cfg['limit']}, sample seed {cfg['sample_seed']})",
        f"- planners (generate mode, top-{cfg['top_k']} candidates from {report.candidates}): "
        f"{planners}; Baseline* and DiffAgent# use **{report.reference_planner}**",
        f"- weights: {report.weights}; k = {cfg['seeds']} seeds; default parameters "
        f"{cfg['default_params']}",
        f"- images generated {report.images_generated}, raw scores computed "
        f"{report.scores_computed}, row judgements {report.row_judgements} "
        f"({report.row_judgements_cached} entirely from the score cache); {report.seconds:.0f} s",
        "",
        "## Table 1: hallucination error and usable JSON",
        "",
        table1_markdown(report),
        "",
    ]
    if report.table2:
        parts += ["## Table 2: image scores", "", table2_markdown(report), ""]
    parts += [f"![{Path(plot).stem}]({plot})" for plot in plots]
    return "\n".join(parts) + "\n"


def plot_table1(report: EvalReport, path: Path) -> Path:
    """Grouped bars: hallucination before repair and usable JSON per prompt set and planner."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = list(dict.fromkeys(row.prompt_set for row in report.table1))
    planners = list(dict.fromkeys(row.planner for row in report.table1))
    cell = {(row.prompt_set, row.planner): row for row in report.table1}
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    width = 0.8 / len(planners)
    for offset, planner in enumerate(planners):
        xs = [i + offset * width for i in range(len(sets))]
        for ax, field in zip(axes, ("hallucination", "usable_json"), strict=True):
            values = [
                100 * getattr(cell[(s, planner)], field) if (s, planner) in cell else 0.0
                for s in sets
            ]
            ax.bar(xs, values, width, label=planner)
    for ax, title in zip(axes, ("hallucination before repair %", "usable JSON %"), strict=True):
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(sets))], sets)
        ax.set_title(title)
        ax.set_ylim(0, 100)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_table2(report: EvalReport, path: Path) -> Path:
    """Grouped bars per prompt set: each row's normalised scorer means and unified metric."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = list(dict.fromkeys(row.prompt_set for row in report.table2))
    metrics = [*SCORERS, "unified"]
    fig, axes = plt.subplots(1, len(sets), figsize=(5 * len(sets), 3.8), squeeze=False)
    for ax, name in zip(axes[0], sets, strict=True):
        rows = [row for row in report.table2 if row.prompt_set == name]
        width = 0.8 / len(rows)
        for offset, row in enumerate(rows):
            values = [
                row.unified if m == "unified" else row.normalised.get(m, 0.0) for m in metrics
            ]
            ax.bar([i + offset * width for i in range(len(metrics))], values, width, label=row.row)
        ax.set_xticks(
            [i + 0.4 - width / 2 for i in range(len(metrics))],
            [_LABELS.get(m, "Unified") for m in metrics],
        )
        ax.set_ylim(0, 1)
        ax.set_title(f"{name} (normalised)")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def write_report(report: EvalReport, out_dir: Path) -> dict[str, Path]:
    """Write report.json, report.md, table1.png and (with images) table2.png into `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "report.json"}
    paths["json"].write_text(report.model_dump_json(indent=2) + "\n", encoding="utf-8")
    paths["table1_png"] = plot_table1(report, out_dir / "table1.png")
    if report.table2:
        paths["table2_png"] = plot_table2(report, out_dir / "table2.png")
    plots = [p.name for key, p in paths.items() if key.endswith("_png")]
    paths["markdown"] = out_dir / "report.md"
    paths["markdown"].write_text(report_markdown(report, plots), encoding="utf-8")
    return paths
