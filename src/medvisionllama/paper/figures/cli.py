"""``mvl figures``: read the inputs, draw every figure the config's experiments call for."""

from __future__ import annotations

import argparse
import functools
import json
import multiprocessing
import re
import zipfile
import zlib
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from medvisionllama.errors import InputError, first_line
from medvisionllama.experiments import load_config, load_experiments
from medvisionllama.io_utils import atomic_dir, read_csv
from medvisionllama.paper.aggregate import HISTORY_COLUMNS, check_numeric, read_long
from medvisionllama.paper.compare import comparison_values
from medvisionllama.paper.figures import base
from medvisionllama.paper.figures.activations import figure_activation_maps
from medvisionllama.paper.figures.cases import figure_attention_strategies, figure_case_scores
from medvisionllama.paper.figures.curves import figure_experiment_curves, figure_training_curves
from medvisionllama.paper.figures.forest import figure_forest, read_claims
from medvisionllama.paper.figures.layers import write_layer_sweep_figure
from medvisionllama.paper.figures.metrics import figure_metric_dots, figure_radar
from medvisionllama.paper.figures.reproduced import figure_published_vs_reproduced
from medvisionllama.paper.figures.segmentation import (
    best_median_worst, case_samples, figure_segmentations, ranked_cases,
)
from medvisionllama.paper.outputs.base import short_task
from medvisionllama.paper.outputs.figures import (
    APPENDIX_FIGURE1, APPENDIX_FIGURE2, APPENDIX_FIGURE3, APPENDIX_FIGURE3_RADAR, CASES, CURVES, FIGURE3, FIGURE4,
    FIGURE5, FOREST, PUBLISHED_VS_REPRODUCED, has_claims, paper_item,
)
from medvisionllama.paper.spec import ExperimentSpec
from medvisionllama.paper.summary import score_experiment
from medvisionllama.paper.tables import config_provenance
from medvisionllama.vocabulary import RunKey


def load_samples(paths: list[str | Path]) -> dict[RunKey, dict[str, np.ndarray]]:
    """Each run's ``samples.npz`` (docs/contracts.md), checked by :func:`check_samples`; a file that
    is not a readable npz archive, or breaks the contract, is refused in one line naming it."""
    out = {}
    for p in paths:
        try:
            with np.load(p, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as exc:
            raise InputError(f"{p}: cannot read samples.npz ({first_line(exc)})") from None
        check_samples(p, arrays)
        out[RunKey.from_path(p)] = arrays
    return out


def check_samples(path: str | Path, arrays: dict[str, np.ndarray]) -> None:
    """Refuse a ``samples.npz`` the figures cannot draw, naming the file and the array: the run's
    sample (``image`` (C, X, Y); ``label``, ``pred`` and every ``act_*`` (X, Y); a numeric
    ``dice``) and each case's (``case{i}_image`` (C, X, Y), ``case{i}_label``/``_pred`` (X, Y))."""
    def problem() -> str | None:
        prefixes = [""] + sorted({m.group(1) for k in arrays if (m := re.match(r"(case\d+_)", k))})
        for prefix in prefixes:
            needed = [prefix + name for name in ("image", "label", "pred")]
            missing = [k for k in needed if k not in arrays]
            if missing:
                return f"lacks {', '.join(missing)}"
            image = arrays[prefix + "image"]
            if image.ndim != 3 or not np.issubdtype(image.dtype, np.number):
                return f"{prefix}image has shape {image.shape} ({image.dtype}); expected a numeric (C, X, Y) array"
            planes = [prefix + "label", prefix + "pred"] + ([k for k in arrays if k.startswith("act_")] if not prefix else [])
            for key in planes:
                if arrays[key].shape != image.shape[1:] or not np.issubdtype(arrays[key].dtype, np.number):
                    return (f"{key} has shape {arrays[key].shape} ({arrays[key].dtype}); expected a numeric array of "
                            f"the image's slice shape {image.shape[1:]}")
            dice = arrays.get(prefix + "dice")
            if dice is not None and (dice.size != 1 or not np.issubdtype(dice.dtype, np.number)):
                return f"{prefix}dice is not one number ({dice.shape}, {dice.dtype})"
        return None

    found = problem()
    if found:
        raise InputError(f"{path}: not a samples.npz of `mvl evaluate`: {found}")


def _pick(samples: dict[RunKey, dict[str, np.ndarray]], spec: ExperimentSpec, task: str, model: str) -> dict[str, np.ndarray]:
    """The sample of the group's first replicate: the smallest seed (and fold, with cross-validation)."""
    return samples[_pick_key(samples, spec, task, model)]


def _pick_key(samples: dict[RunKey, dict[str, np.ndarray]], spec: ExperimentSpec, task: str, model: str) -> RunKey:
    """The run key of :func:`_pick`."""
    group = (task, model, spec.attention[0], spec.sizes[0])
    keys = [k for k in samples if (k.task, k.model, k.attention, k.size) == group and k.seed in spec.seeds]
    if not keys:
        raise InputError(f"no samples.npz given for run {RunKey(*group, min(spec.seeds)).path()}")
    return min(keys, key=lambda k: (k.seed, -1 if getattr(k, "fold", None) is None else k.fold))


def _pick_folds(samples: dict[RunKey, dict[str, np.ndarray]], spec: ExperimentSpec, task: str,
                model: str) -> list[dict[str, np.ndarray]]:
    """The samples of the group's smallest seed: its one run, or all its folds (whose test cases
    together are every case of the task)."""
    first = _pick_key(samples, spec, task, model)
    group = (task, model, spec.attention[0], spec.sizes[0], first.seed)
    return [samples[k] for k in sorted(samples, key=lambda k: -1 if getattr(k, "fold", None) is None else k.fold)
            if (k.task, k.model, k.attention, k.size, k.seed) == group]


def _chosen_cases(pick: dict[tuple[str, str], list], tasks: list[str], models: list[str],
                  median_only: bool) -> tuple[dict, list[str], dict[str, str], dict[str, str]]:
    """Rows of a segmentation figure: per task its best, median and worst test case (or only the
    median), ranked by the case's Dice averaged over ``models``; the samples by (row, model), the
    rows, each row's task and label."""
    samples, rows, row_tasks, row_labels = {}, [], {}, {}
    for task in tasks:
        per_model = {m: case_samples(pick[(task, m)]) for m in models}
        ranked = ranked_cases(per_model)
        if not ranked:
            raise InputError(f"{task}: the models {models} share no test case in their samples.npz")
        chosen = [("median", ranked[(len(ranked) - 1) // 2][0])] if median_only else best_median_worst(ranked)
        for which, case in chosen:
            row = f"{task}:{which}"
            rows.append(row)
            row_tasks[row] = task
            row_labels[row] = f"{short_task(task)}\n{which} of {len(ranked)}"
            for m in models:
                samples[(row, m)] = per_model[m][case]
    return samples, rows, row_tasks, row_labels


def load_class_names(paths: list[str | Path]) -> dict[str, dict[int, str]]:
    """Task -> label value -> class name, from each task's ``dataset.json`` (``labels``).

    ``paths``: task folders (``data/Task01_BrainTumour``) or their ``dataset.json`` files; the
    task is the folder's name.
    """
    out: dict[str, dict[int, str]] = {}
    for p in map(Path, paths):
        file = p / "dataset.json" if p.is_dir() else p
        try:
            labels = json.loads(file.read_text(encoding="utf-8"))["labels"]
            out[file.parent.name] = {int(k): str(v) for k, v in labels.items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise InputError(f"{file}: cannot read the class names (dataset.json 'labels'): {exc}") from exc
    return out


def _claims_by_experiment(paths: list[str | Path]) -> dict[str, Path]:
    """``{experiment}_claims.csv`` -> experiment -> path."""
    out = {}
    for p in map(Path, paths):
        if not p.name.endswith("_claims.csv"):
            raise InputError(f"{p}: expected a claims table named {{experiment}}_claims.csv")
        out[p.name.removesuffix("_claims.csv")] = p
    return out


def _of_spec(frame: pd.DataFrame, spec: ExperimentSpec) -> pd.DataFrame:
    """The rows of ``frame`` (curves or scores) that belong to ``spec``'s runs."""
    keep = (frame["task"].isin(spec.tasks) & frame["model"].isin(spec.models) & frame["seed"].isin(spec.seeds)
            & frame["attention"].isin(spec.attention) & frame["size"].astype(str).isin(spec.sizes))
    return frame[keep]


def _paths_of(function: Callable[..., base.FigureOutput], *args: Any, **kwargs: Any) -> list[Path]:
    return function(*args, **kwargs).paths


_JOBS: list[Callable[[], list[Path]]] = []  #: what the forked processes of :func:`run_jobs` draw


def _run_job(index: int) -> list[Path]:
    return _JOBS[index]()


def run_jobs(todo: list[Callable[[], list[Path]]], jobs: int = 1) -> list[Path]:
    """The files of every job of ``todo``, in order. With ``jobs`` > 1 (and ``fork`` available) the
    jobs run in that many forked processes, which inherit the jobs (nothing is pickled but an index
    and the paths); a job's error is raised here as it would be in one process."""
    if jobs <= 1 or len(todo) <= 1 or "fork" not in multiprocessing.get_all_start_methods():
        return [path for job in todo for path in job()]
    global _JOBS
    _JOBS = todo
    try:
        with multiprocessing.get_context("fork").Pool(min(jobs, len(todo))) as pool:
            results = pool.map(_run_job, range(len(todo)), chunksize=1)
    finally:
        _JOBS = []
    return [path for paths in results for path in paths]


def write_figures(long_path: str | Path, config: str | Path, outdir: str | Path, curves_path: str | Path | None = None,
                  samples: list[str | Path] | None = None, experiments: list[str] | None = None,
                  datasets: list[str | Path] | None = None, claims: list[str | Path] | None = None,
                  jobs: int = 1) -> list[Path]:
    """All figures the config's experiments call for (:func:`medvisionllama.paper.outputs.figure_outputs`),
    into ``outdir`` (replaced atomically); the configuration stamp comes from ``config`` and the
    runs, the class names of the segmentation figures from ``datasets`` (dataset.json files or
    task folders), the forest plots from ``claims`` (``{experiment}_claims.csv`` of ``mvl tables``).
    ``jobs``: figures drawn at once, each in its own process (:func:`run_jobs`)."""
    long = read_long(long_path)
    specs = load_experiments(config, experiments)
    provenance = config_provenance(load_config(config))
    scored = {spec.name: score_experiment(long, spec) for spec in specs}
    npz = load_samples(list(samples or []))
    names = load_class_names(list(datasets or []))
    claim_files = _claims_by_experiment(list(claims or []))
    if curves_path is None or not Path(curves_path).is_file():
        raise InputError(f"the training curves need --curves (the CSV of `mvl aggregate --curves`), got {curves_path}")
    curves = read_csv(curves_path, "training-curves CSV of `mvl aggregate --curves`", dtype={"size": str})
    check_numeric(curves, [*HISTORY_COLUMNS, "seed"], curves_path)  # (the columns: figure_training_curves)
    outdir = Path(outdir)

    def stamp_of(*chosen: ExperimentSpec) -> str | None:
        return base.configuration_stamp(list(chosen), scored, provenance)

    # every figure is one job (drawn in up to `jobs` processes); its files go into the new folder
    todo: list[functools.partial] = []

    def draw(function, *args, **kwargs) -> None:
        todo.append(functools.partial(_paths_of, function, *args, **kwargs))

    def draw_paths(function, *args, **kwargs) -> None:
        todo.append(functools.partial(function, *args, **kwargs))

    with atomic_dir(outdir) as tmp:
        main = FIGURE3.source(specs)
        if main:
            two = [main.baseline, main.models[1]]
            part = _of_spec(curves, main)
            part = part[part["attention"].eq(main.attention[0]) & part["size"].eq(main.sizes[0])]
            draw(figure_training_curves, part, tmp / FIGURE3.stem, list(main.tasks), two, stamp_of(main))
            acts = {m: _pick(npz, main, main.tasks[0], m) for m in two}
            draw(figure_activation_maps, acts, tmp / FIGURE4.stem, stamp_of(main))
        seg = FIGURE5.source(specs)
        if seg:
            fig5_tasks = [t for t in seg.tasks if t.startswith(("Task01", "Task03"))] or list(seg.tasks[:2])
            pick = {(t, m): _pick_folds(npz, seg, t, m) for t in seg.tasks for m in seg.models}
            chosen, rows, row_tasks, row_labels = _chosen_cases(pick, fig5_tasks, list(seg.models), median_only=False)
            draw(figure_segmentations, chosen, rows, list(seg.models), tmp / FIGURE5.stem, FIGURE5.title,
                 names, stamp_of(seg), row_tasks=row_tasks, row_labels=row_labels, note=(
                     "Rows: per task its best, median and worst test case (of the n named), ranked by the case's "
                     "Dice averaged over the models shown (median of an even n: the better middle case)."))
            chosen, rows, row_tasks, row_labels = _chosen_cases(pick, list(seg.tasks), list(seg.models),
                                                                median_only=True)
            draw(figure_segmentations, chosen, rows, list(seg.models), tmp / APPENDIX_FIGURE2.stem,
                 APPENDIX_FIGURE2.title, names, stamp_of(seg), row_tasks=row_tasks, row_labels=row_labels, note=(
                     "Each row: the task's median test case (of the n named), ranked by the case's Dice averaged "
                     "over the models shown (of an even n: the better middle case)."))
            scores = scored[seg.name].scores
            scores = scores[scores["attention"].eq(seg.attention[0]) & scores["size"].astype(str).eq(seg.sizes[0])]
            draw(figure_metric_dots, scores, list(seg.models), tmp / APPENDIX_FIGURE3.stem, APPENDIX_FIGURE3.title,
                 comparison_values(scored[seg.name]), stamp=stamp_of(seg))
            s = scored[seg.name].summary
            task = next((t for t in seg.tasks if t.startswith("Task01")), seg.tasks[0])
            s = s[s["task"] == task].set_index("model").loc[list(seg.models)].reset_index()  # the config's order
            draw(figure_radar, s, tmp / APPENDIX_FIGURE3_RADAR.stem,
                 f"Metrics on {short_task(task)} ({APPENDIX_FIGURE3_RADAR.title})", stamp_of(seg))
        att = APPENDIX_FIGURE1.source(specs)
        if att:
            model = att.models[0]
            runs = long[long["model"].eq(model) & long["task"].isin(att.tasks)]
            params = runs.groupby("attention")[["params_trainable", "params_total"]].first().reset_index()
            scores = scored[att.name].scores
            draw(figure_attention_strategies, scores[scores["model"] == model], params, tmp / APPENDIX_FIGURE1.stem,
                 list(att.attention), comparison_values(scored[att.name]),
                 f"{APPENDIX_FIGURE1.title}: {model}", stamp_of(att))
        for spec in specs:
            item = paper_item(spec.table.name)
            if has_claims(spec):  # an experiment of controls only claims nothing: no forest plot
                if spec.name not in claim_files:
                    raise InputError(f"the forest plot of experiment {spec.name!r} needs --claims "
                                     f"{spec.name}_claims.csv (mvl tables)")
                draw(figure_forest, read_claims(claim_files[spec.name]), tmp / FOREST.stem(spec.name),
                     f"{FOREST.title}: {spec.name} ({item})", stamp_of(spec))
            draw(figure_case_scores, scored[spec.name].scores, tmp / CASES.stem(spec.name),
                 f"{CASES.title}: {spec.name} ({item})", ("dice", "hd95"),
                 comparison_values(scored[spec.name]), stamp_of(spec))
            draw(figure_experiment_curves, _of_spec(curves, spec), tmp / CURVES.stem(spec.name),
                 f"{CURVES.title}: {spec.name} ({item})", stamp_of(spec))
        if PUBLISHED_VS_REPRODUCED.wanted(specs):  # skipped without published numbers (custom, own tasks)
            values = pd.concat([comparison_values(scored[spec.name]) for spec in specs if spec.table.published],
                               ignore_index=True)
            stamp = stamp_of(*specs)
            if stamp:
                stamp += " Published numbers are shown for reference, not as the target of this run."
            draw(figure_published_vs_reproduced, values, tmp / PUBLISHED_VS_REPRODUCED.stem, stamp)
        sweeps = [spec for spec in specs if spec.llm_layers]  # beyond the paper: Dice per LLM layer
        if sweeps:
            draw_paths(write_layer_sweep_figure, [scored[s.name] for s in sweeps], tmp, stamp_of(*sweeps))
        written = run_jobs(todo, jobs)
    return [outdir / p.name for p in written]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mvl figures", description="Draw the paper's figures.")
    parser.add_argument("--long", required=True, help="long table from `mvl aggregate`")
    parser.add_argument("--config", required=True,
                        help="pipeline config (YAML; the resolved results/config.yaml): experiments and provenance")
    parser.add_argument("--outdir", required=True, help="folder to write (replaced as a whole)")
    parser.add_argument("--curves", default=None, help="training curves CSV from `mvl aggregate --curves`")
    parser.add_argument("--samples", nargs="*", default=[], help="samples.npz files of the runs shown")
    parser.add_argument("--datasets", nargs="*", default=[],
                        help="task folders (or their dataset.json): the class names of the segmentation figures")
    parser.add_argument("--claims", nargs="*", default=[],
                        help="{experiment}_claims.csv of `mvl tables`: the forest plots")
    parser.add_argument("--experiment", action="append", default=None, help="only this experiment (repeatable)")
    parser.add_argument("--jobs", type=int, default=1, help="figures drawn at once, each in its own process")
    args = parser.parse_args(argv)
    written = write_figures(long_path=args.long, config=args.config, outdir=args.outdir, curves_path=args.curves,
                            samples=args.samples, experiments=args.experiment, datasets=args.datasets,
                            claims=args.claims, jobs=args.jobs)
    print(f"figures: {len(written)} files -> {args.outdir}")
    return 0
