"""``mvl figures``: the paper's figures from the long table, training curves and samples.npz.

Each ``figure_*`` function takes in-memory data and an output stem, saves ``{stem}.png`` and
``{stem}.pdf`` atomically and returns a :class:`FigureOutput` (paths and panel count):

* :func:`figure_training_curves` - Figure 3: train/val Dice and loss per epoch, ViT vs +LLM.
* :func:`figure_activation_maps` - Figure 4: input slice on top; V_E, V_LLM, V_D per model.
* :func:`figure_segmentations` - Figure 5 / Appendix Figure 2: task rows x model columns, slice
  with ground-truth contour and predicted overlay, per-case Dice in each title.
* :func:`figure_attention_strategies` - Appendix Figure 1: parameters and Dice per strategy.
* :func:`figure_radar` - Appendix Figure 3: Dice, accuracy, precision, recall, Jaccard and
  1 - HD95/max per model.
* :func:`figure_published_vs_reproduced` - new: reproduced vs published Dice, identity line.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from medvisionllama.errors import InputError  # noqa: E402
from medvisionllama.io_utils import atomic_dir, atomic_path  # noqa: E402
from medvisionllama.paper.aggregate import read_long  # noqa: E402
from medvisionllama.paper.compare import comparison_values, configuration_differences  # noqa: E402
from medvisionllama.paper.published import ATTENTION_LABELS, model_label  # noqa: E402
from medvisionllama.experiments import load_config, load_experiments  # noqa: E402
from medvisionllama.paper.outputs.base import short_task as _short  # noqa: E402
from medvisionllama.paper.outputs.figures import (  # noqa: E402
    APPENDIX_FIGURE1, APPENDIX_FIGURE2, APPENDIX_FIGURE3, FIGURE3, FIGURE4, FIGURE5, PUBLISHED_VS_REPRODUCED,
)
from medvisionllama.paper.spec import ExperimentSpec  # noqa: E402
from medvisionllama.paper.summary import score_experiment  # noqa: E402
from medvisionllama.paper.tables import config_provenance, default_provenance  # noqa: E402
from medvisionllama.vocabulary import PAPER_METRICS as METRICS, RunKey  # noqa: E402

Sample = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class FigureOutput:
    paths: list[Path]  #: the PNG and the PDF
    n_panels: int  #: axes holding data (figure-level legends not counted)


def _save(fig: plt.Figure, stem: str | Path, n_panels: int) -> FigureOutput:
    stem = Path(stem)
    paths = []
    for ext in ("png", "pdf"):
        target = stem.with_name(f"{stem.name}.{ext}")
        with atomic_path(target, suffix=f".{ext}") as tmp:
            fig.savefig(tmp, format=ext, dpi=150, bbox_inches="tight")
        paths.append(target)
    plt.close(fig)
    return FigureOutput(paths, n_panels)


def figure_training_curves(curves: pd.DataFrame, stem: str | Path, tasks: list[str], models: list[str]) -> FigureOutput:
    """Figure 3. ``curves``: rows of history.csv with ``task, model, seed`` (see ``mvl aggregate
    --curves``). One row of panels per task: Dice | loss; solid = training, dashed = validation;
    several seeds: mean line and ± sd band."""
    missing = [c for c in ("task", "model", "seed", "epoch", "train_dice", "val_dice", "train_loss", "val_loss")
               if c not in curves.columns]
    if missing:
        raise InputError(f"training curves lack columns {missing}")
    data = curves[curves["task"].isin(tasks) & curves["model"].isin(models)]
    for task in tasks:
        for model in models:
            if data[(data["task"] == task) & (data["model"] == model)].empty:
                raise InputError(f"figure 3: no training curve for {task} / {model}")
    rows = []
    for quantity in ("dice", "loss"):
        for split, name in (("train", "training"), ("val", "validation")):
            part = data[["task", "model", "seed", "epoch", f"{split}_{quantity}"]].rename(columns={f"{split}_{quantity}": "value"})
            rows.append(part.assign(quantity=quantity, split=name))
    long = pd.concat(rows, ignore_index=True)
    long["Model"] = long["model"].map(model_label)
    fig, axes = plt.subplots(len(tasks), 2, figsize=(10, 3.4 * len(tasks)), squeeze=False)
    for i, task in enumerate(tasks):
        for j, (quantity, ylabel) in enumerate((("dice", "Dice"), ("loss", "Loss (cross-entropy)"))):
            ax = axes[i, j]
            sub = long[(long["task"] == task) & (long["quantity"] == quantity)]
            sns.lineplot(sub, x="epoch", y="value", hue="Model", style="split", errorbar="sd",
                         hue_order=[model_label(m) for m in models], style_order=["training", "validation"],
                         ax=ax, legend=(i == 0 and j == 0))
            ax.set(title=f"{_short(task)}: {ylabel.split(' ')[0]}", xlabel="Epoch", ylabel=ylabel)
            ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
    if axes[0, 0].get_legend() is not None:
        handles, labels = axes[0, 0].get_legend_handles_labels()
        axes[0, 0].get_legend().remove()
        fig.legend(handles, labels, loc="upper center", ncol=len(labels), bbox_to_anchor=(0.5, 1.0), frameon=False)
        fig.subplots_adjust(top=0.82 if len(tasks) == 1 else 0.9)
    fig.suptitle("Training curves (Figure 3)", y=1.06 if len(tasks) == 1 else 1.02)
    return _save(fig, stem, axes.size)


def figure_activation_maps(samples: Mapping[str, Sample], stem: str | Path) -> FigureOutput:
    """Figure 4. ``samples``: model label -> samples.npz of the same test case (first = ViT).
    Top: the input slice (channel 0); below, one column per model: |activation| at V_E, V_LLM
    and V_D, each normalised to its own maximum (models without V_LLM show an empty panel)."""
    if not samples:
        raise InputError("figure 4: no samples given")
    labels = list(samples)
    first = samples[labels[0]]
    n = len(labels)
    fig = plt.figure(figsize=(3.0 * n + 1.2, 3.0 * 4), layout="constrained")
    grid = fig.add_gridspec(4, n)
    top = fig.add_subplot(grid[0, :])
    top.imshow(np.asarray(first["image"])[0].T, cmap="gray", origin="lower")
    top.set_title(f"Input slice (case {str(np.asarray(first['case_id']))}, channel 0)")
    top.axis("off")
    panels = 1
    levels = (("act_V_E", "$V_E$ (encoder)"), ("act_V_LLM", "$V_{LLM}$ (LLM block)"), ("act_V_D", "$V_D$ (decoder)"))
    image = None
    for j, label in enumerate(labels):
        for i, (key, name) in enumerate(levels, start=1):
            ax = fig.add_subplot(grid[i, j])
            panels += 1
            ax.set_xticks([])
            ax.set_yticks([])
            if key in samples[label]:
                act = np.abs(np.asarray(samples[label][key], dtype=float))
                image = ax.imshow((act / act.max() if act.max() > 0 else act).T, cmap="inferno", vmin=0, vmax=1,
                                  origin="lower")
            else:
                ax.text(0.5, 0.5, "no $V_{LLM}$\n(model has no LLM block)", ha="center", va="center",
                        transform=ax.transAxes, fontsize=9, color="0.4")
                ax.set_facecolor("0.95")
                ax.set_box_aspect(np.asarray(first["image"]).shape[2] / np.asarray(first["image"]).shape[1])
            if i == 1:
                ax.set_title(label, fontsize=11)
            if j == 0:
                ax.set_ylabel(name, fontsize=11)
    if image is not None:
        fig.colorbar(image, ax=fig.axes[1:], shrink=0.6, label="|activation| / max")
    fig.suptitle("Feature activation maps (Figure 4)")
    return _save(fig, stem, panels)


_PRED_COLORS = ["#e6194b", "#4363d8", "#f58231", "#911eb4"]


def figure_segmentations(samples: Mapping[tuple[str, str], Sample], tasks: list[str], models: list[str],
                         stem: str | Path, title: str) -> FigureOutput:
    """Figure 5 / Appendix Figure 2. ``samples``: (task, model) -> samples.npz. Each panel: the
    image slice (channel 0), the prediction as a coloured overlay (one colour per class), the
    ground truth as a green contour; the title gives the case's Dice."""
    missing = [f"{t}/{m}" for t in tasks for m in models if (t, m) not in samples]
    if missing:
        raise InputError(f"{title}: no samples.npz for {missing}")
    fig, axes = plt.subplots(len(tasks), len(models), figsize=(2.6 * len(models), 2.8 * len(tasks) + 0.6),
                             squeeze=False, layout="constrained")
    classes: set[int] = set()  # foreground classes drawn anywhere, for the legend
    for i, task in enumerate(tasks):
        for j, model in enumerate(models):
            s, ax = samples[(task, model)], axes[i, j]
            ax.imshow(np.asarray(s["image"])[0].T, cmap="gray", origin="lower")
            pred, label = np.asarray(s["pred"]).T, np.asarray(s["label"]).T
            for k in sorted(set(np.unique(pred)) - {0}):
                classes.add(int(k))
                color = matplotlib.colors.to_rgba(_PRED_COLORS[(int(k) - 1) % len(_PRED_COLORS)], 0.45)
                ax.imshow(np.where(pred[..., None] == k, np.array(color), 0.0), origin="lower")
            for k in sorted(set(np.unique(label)) - {0}):  # one contour per class (nested classes: >= k)
                ax.contour(label >= k, levels=[0.5], colors="#3cb44b", linewidths=1.2, origin="lower")
            ax.set_title(f"{model_label(model)}\ncase Dice {float(np.asarray(s['dice'])):.2f}" if i == 0
                         else f"case Dice {float(np.asarray(s['dice'])):.2f}", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(_short(task), fontsize=11)
    handles = [matplotlib.lines.Line2D([], [], color="#3cb44b", lw=1.5, label="ground truth (contour per class)"),
               *[matplotlib.patches.Patch(color=_PRED_COLORS[(k - 1) % len(_PRED_COLORS)], alpha=0.45,
                                          label=f"prediction, class {k}") for k in sorted(classes)]]
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 4), frameon=False)
    fig.suptitle(title)
    return _save(fig, stem, axes.size)


def figure_attention_strategies(summary: pd.DataFrame, stem: str | Path, order: list[str] | None = None) -> FigureOutput:
    """Appendix Figure 1. ``summary``: :func:`medvisionllama.paper.summary.summarize` rows of one
    model (``attention, task, params_total, dice_mean, dice_std``). Left: parameters per
    strategy; right: Dice per task and strategy (error bars: std over test cases)."""
    s = summary.copy()
    s["Strategy"] = s["attention"].map(ATTENTION_LABELS)
    s["Task"] = s["task"].map(_short)
    order = [ATTENTION_LABELS[a] for a in order] if order else list(dict.fromkeys(s["Strategy"]))
    palette = dict(zip(order, sns.color_palette("colorblind", len(order))))
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8), gridspec_kw={"width_ratios": [1, 2]})
    params = (s.groupby("Strategy", sort=False)["params_total"].first() / 1e6).reindex(order)
    bars = left.bar(params.index, params.to_numpy(), color=[palette[k] for k in params.index])
    left.bar_label(bars, fmt="%.2f", padding=2)
    left.margins(y=0.12)
    left.set(title="Parameters", ylabel="Parameters (M)")
    tasks = list(dict.fromkeys(s["Task"]))
    width = 0.8 / len(order)
    for k, strategy in enumerate(order):
        part = s[s["Strategy"] == strategy].set_index("Task").reindex(tasks)
        x = np.arange(len(tasks)) + (k - (len(order) - 1) / 2) * width
        right.bar(x, part["dice_mean"], width, yerr=part["dice_std"], capsize=3, color=palette[strategy], label=strategy)
    right.set_xticks(np.arange(len(tasks)), tasks)
    right.set(title="Dice (mean ± std over test cases)", ylabel="Dice", ylim=(0, 1))
    right.legend(title="Hybrid attention", frameon=False, loc="upper right", ncol=len(order))
    fig.suptitle("Hybrid attention strategies (Appendix Figure 1)")
    fig.tight_layout()
    return _save(fig, stem, 2)


RADAR_AXES = list(METRICS)


def figure_radar(summary: pd.DataFrame, stem: str | Path, title: str) -> FigureOutput:
    """Appendix Figure 3. ``summary``: one row per model (``model, {metric}_mean``). HD95 is
    plotted as 1 - HD95 / max HD95 over the models shown (higher is better on every axis)."""
    s = summary.set_index("model")
    values = s[[f"{m}_mean" for m in RADAR_AXES]].astype(float).copy()
    values.columns = RADAR_AXES
    hd_max = values["hd95"].max()
    values["hd95"] = 1 - values["hd95"] / hd_max if hd_max and np.isfinite(hd_max) else np.nan
    names = ["Dice", "Accuracy", "Precision", "Recall", "Jaccard", f"1 − HD95/{hd_max:.1f}"]
    angles = np.linspace(0, 2 * np.pi, len(RADAR_AXES), endpoint=False)
    fig, ax = plt.subplots(figsize=(6.2, 6.2), subplot_kw={"projection": "polar"})
    colors = sns.color_palette("colorblind", len(values))
    for color, (model, row) in zip(colors, values.iterrows()):
        v = np.append(row.to_numpy(), row.to_numpy()[0])
        a = np.append(angles, angles[0])
        ax.plot(a, v, color=color, lw=1.8, label=model_label(model))
        ax.fill(a, v, color=color, alpha=0.08)
    ax.set_xticks(angles, names)
    ax.tick_params(axis="x", pad=14)
    ax.set_ylim(0, 1)
    ax.set_yticks([0.25, 0.5, 0.75, 1.0])
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=2, frameon=False)
    ax.set_title(title, pad=24)
    return _save(fig, stem, 1)


def figure_published_vs_reproduced(values: pd.DataFrame, stem: str | Path, header: str) -> FigureOutput:
    """New figure. ``values``: :func:`medvisionllama.paper.compare.comparison_values` rows
    (several experiments concatenated); Dice cells with a published number are plotted,
    reproduced (y) against published (x), colour = paper model, marker = experiment."""
    d = values[(values["metric"] == "dice") & values["published_mean"].notna()].copy()
    if d.empty:
        raise InputError("published-vs-reproduced figure: no Dice cell has a published counterpart")
    d["Paper model"] = d["paper_model"].map(model_label)
    d["Experiment"] = d["experiment"]
    fig, ax = plt.subplots(figsize=(6.4, 6.0))
    ax.plot([0, 1], [0, 1], color="0.5", lw=1, ls="--", label="reproduced = published")
    sns.scatterplot(d, x="published_mean", y="reproduced_mean", hue="Paper model", style="Experiment", s=60, ax=ax)
    ax.errorbar(d["published_mean"], d["reproduced_mean"], yerr=d["reproduced_std"], fmt="none", ecolor="0.7",
                lw=0.8, zorder=0)
    lo = float(min(d["published_mean"].min(), d["reproduced_mean"].min(), 0.5)) - 0.05
    ax.set(xlim=(lo, 1), ylim=(lo, 1), xlabel="Published Dice (paper)", ylabel="Reproduced Dice (mean ± std over test cases)")
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1), frameon=False)
    ax.set_title("Reproduced vs published Dice per task and model")
    fig.text(0.01, -0.02, header, fontsize=8, wrap=True, ha="left", va="top")
    return _save(fig, stem, 1)


# --------------------------------------------------------------------------------------- CLI


def load_samples(paths: list[str | Path]) -> dict[RunKey, dict[str, np.ndarray]]:
    out = {}
    for p in paths:
        try:
            with np.load(p, allow_pickle=False) as z:
                out[RunKey.from_path(p)] = {k: z[k] for k in z.files}
        except (OSError, ValueError) as exc:
            raise InputError(f"{p}: cannot read samples.npz ({exc})") from exc
    return out


def _pick(samples: dict[RunKey, dict[str, np.ndarray]], spec: ExperimentSpec, task: str, model: str) -> dict[str, np.ndarray]:
    key = RunKey(task, model, spec.attention[0], spec.sizes[0], min(spec.seeds))
    if key not in samples:
        raise InputError(f"no samples.npz given for run {key.path()}")
    return samples[key]


def write_figures(long_path: str | Path, config: str | Path, outdir: str | Path, curves_path: str | Path | None = None,
                  samples: list[str | Path] | None = None, experiments: list[str] | None = None) -> list[Path]:
    """All figures the config's experiments call for (:mod:`medvisionllama.paper.outputs.figures`),
    into ``outdir`` (replaced atomically); the provenance line comes from ``config``."""
    long = read_long(long_path)
    specs = load_experiments(config, experiments)
    provenance = config_provenance(load_config(config))
    scored = {spec.name: score_experiment(long, spec) for spec in specs}
    npz = load_samples(list(samples or []))
    outdir = Path(outdir)
    written: list[Path] = []
    with atomic_dir(outdir) as tmp:
        main = FIGURE3.source(specs)
        if main:
            if curves_path is None or not Path(curves_path).is_file():
                raise InputError(f"figure 3 needs --curves (training curves CSV of `mvl aggregate`), got {curves_path}")
            curves = pd.read_csv(curves_path, dtype={"size": str})
            curves = curves[curves["attention"].eq(main.attention[0]) & curves["size"].eq(main.sizes[0])
                            & curves["seed"].isin(main.seeds)]
            two = [main.baseline, main.models[1]]
            written += figure_training_curves(curves, tmp / FIGURE3.stem, [main.tasks[0]], two).paths
            acts = {model_label(m): _pick(npz, main, main.tasks[0], m) for m in two}
            written += figure_activation_maps(acts, tmp / FIGURE4.stem).paths
        seg = FIGURE5.source(specs)
        if seg:
            fig5_tasks = [t for t in seg.tasks if t.startswith(("Task01", "Task03"))] or list(seg.tasks[:2])
            pick = {(t, m): _pick(npz, seg, t, m) for t in seg.tasks for m in seg.models}
            written += figure_segmentations(pick, fig5_tasks, list(seg.models), tmp / FIGURE5.stem, FIGURE5.title).paths
            written += figure_segmentations(pick, list(seg.tasks), list(seg.models), tmp / APPENDIX_FIGURE2.stem,
                                            APPENDIX_FIGURE2.title).paths
            s = scored[seg.name].summary
            task = next((t for t in seg.tasks if t.startswith("Task01")), seg.tasks[0])
            written += figure_radar(s[s["task"] == task], tmp / APPENDIX_FIGURE3.stem,
                                    f"Metrics on {_short(task)} ({APPENDIX_FIGURE3.title})").paths
        att = APPENDIX_FIGURE1.source(specs)
        if att:
            s = scored[att.name].summary
            written += figure_attention_strategies(s[s["model"] == att.models[0]], tmp / APPENDIX_FIGURE1.stem,
                                                   list(att.attention)).paths
        values = pd.concat([comparison_values(scored[spec.name]) for spec in specs], ignore_index=True)
        parts = []  # the differences from the paper of all experiments shown, without repeats
        for spec in specs:
            parts += configuration_differences(spec, default_provenance(scored[spec.name], provenance))
        parts = list(dict.fromkeys(parts))
        header = ("NOT the paper's configuration: " + "; ".join(parts) + "." if parts
                  else "Configuration as stated in the paper.")
        written += figure_published_vs_reproduced(values, tmp / PUBLISHED_VS_REPRODUCED.stem, header).paths
    return [outdir / p.name for p in written]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mvl figures", description=__doc__.split("\n\n")[0])
    parser.add_argument("--long", required=True, help="long table from `mvl aggregate`")
    parser.add_argument("--config", required=True,
                        help="pipeline config (YAML; the resolved results/config.yaml): experiments and provenance")
    parser.add_argument("--outdir", required=True, help="folder to write (replaced as a whole)")
    parser.add_argument("--curves", default=None, help="training curves CSV from `mvl aggregate --curves`")
    parser.add_argument("--samples", nargs="*", default=[], help="samples.npz files of the runs shown")
    parser.add_argument("--experiment", action="append", default=None, help="only this experiment (repeatable)")
    args = parser.parse_args(argv)
    written = write_figures(long_path=args.long, config=args.config, outdir=args.outdir, curves_path=args.curves,
                            samples=args.samples, experiments=args.experiment)
    print(f"figures: {len(written)} files -> {args.outdir}")
    return 0
