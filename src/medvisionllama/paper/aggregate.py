"""``mvl aggregate``: collect many runs' outputs into one long table (and training curves).

Reads, per run folder (``results/runs/{task}/{model}/{attention}/{size}/{replicate}/``, the
replicate ``seed{seed}`` or, with k-fold cross-validation, ``seed{seed}-fold{fold}``):
``metrics.csv`` (per case and class, each metric with its status, see docs/contracts.md),
``run.json`` (parameter counts, training seconds, device) and ``history.csv`` (one row per epoch).
A ``metrics.csv`` written before the statuses existed is refused: its NaN values were dropped from
means, which rewarded a miss; re-evaluate the run.

The long table has the columns of ``metrics.csv`` plus ``fold`` (the cross-validation fold of the
run, from its folder name; empty for the single split), ``params_total, params_trainable,
train_seconds, device, epochs`` (``device`` = ``run.json``'s ``device_name``, else its ``device``;
``epochs`` = rows of ``history.csv``) and ``run`` (the run's key path). Besides each case's
per-class rows it holds one **per-case summary row** with ``class_index = -1`` and ``class_name =
"mean"``: every metric's plain mean over the foreground classes (``class_index >= 1``; a
background row, if present, is ignored), and its status: ``penalised`` when any class is,
``empty`` when every class is, ``skipped`` when any class is (the value is then NaN), else
``defined``. A NaN is only allowed where the metric was not computed (status ``skipped``); any
other NaN is an error, never silently dropped. Per-class rows of ``metrics.csv`` that already say
``mean`` are recomputed. Tables and figures use the summary rows: one score per test case.

Out-of-fold predictions: the K fold runs of one run group and seed together test every case once,
so a table cell pools their test cases (``paper.summary``); a case tested by two folds of the same
group and seed (folds of different splits mixed) is refused.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Iterable

import pandas as pd

from medvisionllama.errors import InputError
from medvisionllama.io_utils import atomic_path, read_csv
from medvisionllama.vocabulary import (
    HISTORY_COLUMNS as _HISTORY,
    MEAN_CLASS,
    METRIC_NAMES as _METRIC_NAMES,
    METRIC_STATUS_COLUMNS as _STATUS_COLUMNS,
    METRICS_COLUMNS as _METRICS_COLUMNS,
    RUN_KEY_COLUMNS,
    RunKey,
    parse_replicate,
)

METRICS_COLUMNS = list(_METRICS_COLUMNS)
METRIC_NAMES = list(_METRIC_NAMES)
STATUS_COLUMNS = list(_STATUS_COLUMNS)
HISTORY_COLUMNS = list(_HISTORY)
RUN_COLUMNS = ["params_total", "params_trainable", "train_seconds", "device", "epochs", "run"]
#: the statuses a metrics.csv may hold (``evaluation/metrics.py``; repeated here, which imports no torch)
STATUSES = ("defined", "penalised", "empty", "skipped")
#: the cross-validation fold of a run (nullable integer; empty for the single split)
FOLD = "fold"
LONG_COLUMNS = METRICS_COLUMNS + [FOLD] + RUN_COLUMNS
CURVE_COLUMNS = ["run", *RUN_KEY_COLUMNS, FOLD] + HISTORY_COLUMNS


def read_run_json(path: Path) -> dict[str, float | str]:
    """``params_total, params_trainable, train_seconds, device`` from a run's ``run.json`` (written
    by ``mvl train``: ``params.total``, ``params.trainable``, ``train_seconds``, ``device_name`` or
    ``device``; ``not recorded`` when it has neither)."""
    try:
        data = json.loads(path.read_text())
        device = data.get("device_name") or data.get("device") or "not recorded"
        return {"params_total": float(data["params"]["total"]), "params_trainable": float(data["params"]["trainable"]),
                "train_seconds": float(data["train_seconds"]), "device": str(device)}
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: cannot read run.json ({exc})") from exc
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"{path}: not a run.json of `mvl train` (no valid {exc})") from None


def read_history(path: Path) -> pd.DataFrame:
    """A run's ``history.csv`` (columns checked)."""
    df = read_csv(path, "history.csv of `mvl train`")
    missing = [c for c in HISTORY_COLUMNS if c not in df.columns]
    if missing:
        raise InputError(f"{path}: history.csv lacks columns {missing}")
    check_numeric(df, HISTORY_COLUMNS, path)
    return df[HISTORY_COLUMNS]


def check_numeric(df: pd.DataFrame, columns: list[str], where: str | Path, *, integer: bool = False) -> None:
    """Refuse a column of ``columns`` holding a value that is not a number (an empty cell is NaN and
    passes), or with ``integer`` one that is not a whole number, naming the file, column and row."""
    for column in (c for c in columns if c in df.columns):
        values = df[column]
        numbers = pd.to_numeric(values, errors="coerce")
        bad = numbers.isna() & values.notna()
        if integer:
            bad |= numbers.notna() & (numbers != numbers.round())
        if bad.any():
            row = int(bad.to_numpy().nonzero()[0][0])
            kind = "a whole number" if integer else "a number"
            raise InputError(f"{where}: {column} '{values.iloc[row]}' in data row {row + 1} is not {kind} "
                             f"({int(bad.sum())} such value(s)); the file is damaged or not this pipeline's")


def check_metrics(metrics: pd.DataFrame, where: str | Path) -> None:
    """Refuse metric rows without status columns (an evaluation older than the statuses), with a
    metric, class index or seed that is not a number, an unknown status, or with a NaN in a metric
    that was computed (status other than ``skipped``)."""
    missing = [c for c in STATUS_COLUMNS if c not in metrics.columns]
    if missing:
        raise InputError(f"{where}: no metric status columns ({', '.join(missing)}): written by an older "
                         f"`mvl evaluate` whose NaN values rewarded a miss; re-evaluate the run (delete metrics.csv)")
    check_numeric(metrics, METRIC_NAMES, where)
    check_numeric(metrics, ["class_index", "seed"], where, integer=True)
    for metric, column in zip(METRIC_NAMES, STATUS_COLUMNS):
        status = metrics[column].astype(str)
        unknown = sorted(set(status) - set(STATUSES))
        if unknown:
            raise InputError(f"{where}: unknown {column} {unknown}; expected one of {', '.join(STATUSES)}")
        bad = metrics[metric].isna() & (status != "skipped")
        if bad.any():
            first = metrics[bad].iloc[0]
            raise InputError(f"{where}: {metric} is NaN although computed ({column} {first[column]!r}) for case "
                             f"{first['case_id']} class {first['class_name']}: {int(bad.sum())} value(s)")


def combined_status(statuses: pd.Series) -> str:
    """The status of a mean over classes: ``skipped`` if any class is, ``penalised`` if any is,
    ``empty`` if all are, else ``defined``."""
    values = set(statuses.astype(str))
    if "skipped" in values:
        return "skipped"
    if "penalised" in values:
        return "penalised"
    return "empty" if values == {"empty"} else "defined"


def per_case_means(metrics: pd.DataFrame) -> pd.DataFrame:
    """One row per case (``class_index = -1``, ``class_name = "mean"``): each metric's plain mean
    over the foreground classes (``class_index >= 1``) and its status (:func:`combined_status`)."""
    keys = [*RUN_KEY_COLUMNS, "case_id"]
    fg = metrics[metrics["class_index"] >= 1]
    grouped = fg.groupby(keys, sort=False, dropna=False)
    means = grouped[METRIC_NAMES].mean(numeric_only=False).reset_index()
    for metric, column in zip(METRIC_NAMES, STATUS_COLUMNS):
        skipped = grouped[column].agg(lambda s: (s.astype(str) == "skipped").any()).to_numpy()
        means.loc[skipped, metric] = float("nan")  # a mean with a class not computed is not computed
        means[column] = grouped[column].agg(combined_status).to_numpy()
    means["class_index"] = -1
    means["class_name"] = MEAN_CLASS
    return means


def read_run(run_dir: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The long rows and the curve rows of one run folder."""
    run_dir = Path(run_dir)
    metrics_path = run_dir / "metrics.csv"
    for name in ("metrics.csv", "run.json", "history.csv"):
        if not (run_dir / name).is_file():
            raise InputError(f"{run_dir}: missing {name} (is the run trained and evaluated?)")
    metrics = read_csv(metrics_path, "metrics.csv of `mvl evaluate`", dtype={"size": str, "case_id": str, "class_name": str})
    check_metrics(metrics, metrics_path)
    missing = [c for c in METRICS_COLUMNS if c not in metrics.columns]
    if missing:
        raise InputError(f"{metrics_path}: lacks columns {missing}")
    if metrics.empty:
        raise InputError(f"{metrics_path}: no rows")
    metrics = metrics[METRICS_COLUMNS]
    metrics = metrics[(metrics["class_index"] >= 0) & (metrics["class_name"] != MEAN_CLASS)]
    keys = metrics[list(RUN_KEY_COLUMNS)].drop_duplicates()
    if len(keys) != 1:
        raise InputError(f"{metrics_path}: holds {len(keys)} runs; expected one")
    run_info = read_run_json(run_dir / "run.json")
    history = read_history(run_dir / "history.csv")
    key = keys.iloc[0]
    fold = run_fold(run_dir, int(key["seed"]))
    run = RunKey(key["task"], key["model"], key["attention"], str(key["size"]), int(key["seed"]), fold).path()
    long = pd.concat([metrics, per_case_means(metrics)], ignore_index=True)[METRICS_COLUMNS]
    long = long.sort_values(["case_id", "class_index"], kind="stable").reset_index(drop=True)
    for name, value in run_info.items():
        long[name] = value
    long["epochs"] = len(history)
    long["run"] = run
    long[FOLD] = pd.array([fold] * len(long), dtype="Int64")
    curves = history.copy()
    for name in ["run", *RUN_KEY_COLUMNS]:
        curves[name] = run if name == "run" else key[name]
    curves[FOLD] = pd.array([fold] * len(curves), dtype="Int64")
    return long[LONG_COLUMNS], curves[CURVE_COLUMNS]


#: the folder inside a run where ``mvl train`` sets aside a superseded run (training.train.SUPERSEDED;
#: not imported from there: that module imports torch)
SUPERSEDED = "superseded"


def run_fold(run_dir: Path, seed: int) -> int | None:
    """The cross-validation fold of a run folder: its name's ``-fold{k}`` (``seed0-fold2``), else
    ``summary.json``'s ``run.fold`` (a folder copied under another name), else None (single split).
    A folder name whose seed differs from ``metrics.csv``'s is refused."""
    try:
        name_seed, fold = parse_replicate(run_dir.name)
    except InputError:
        name_seed, fold = seed, None
        summary = run_dir / "summary.json"
        if summary.is_file():
            try:
                recorded = (json.loads(summary.read_text()).get("run") or {}).get(FOLD)
            except (OSError, json.JSONDecodeError, AttributeError):
                recorded = None
            fold = int(recorded) if isinstance(recorded, int) else None
    if name_seed != seed:
        raise InputError(f"{run_dir}: the folder name says seed {name_seed}, metrics.csv seed {seed}")
    return fold


def find_run_dirs(paths: Iterable[str | Path]) -> list[Path]:
    """Run folders from the given paths: a ``metrics.csv`` file names its folder; a folder holding
    ``metrics.csv`` is a run; any other folder is searched recursively for ``metrics.csv``, skipping
    the ``superseded/`` folders where ``mvl train`` sets aside a run it retrains (old results)."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_file() and path.name == "metrics.csv":
            found.append(path.parent)
        elif path.is_dir() and (path / "metrics.csv").is_file():
            found.append(path)
        elif path.is_dir():
            hits = sorted(p.parent for p in path.rglob("metrics.csv")
                          if SUPERSEDED not in p.relative_to(path).parts)
            if not hits:
                raise InputError(f"{path}: no metrics.csv below this folder")
            found.extend(hits)
        else:
            raise InputError(f"{path}: not a metrics.csv file nor a folder")
    return sorted(dict.fromkeys(p.resolve() for p in found))


def aggregate_runs(runs: Iterable[str | Path]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(long, curves)`` of all runs below ``runs`` (see :func:`find_run_dirs`)."""
    dirs = find_run_dirs(runs)
    if not dirs:
        raise InputError("aggregate: no runs given")
    parts = [read_run(d) for d in dirs]
    long = pd.concat([p[0] for p in parts], ignore_index=True)
    curves = pd.concat([p[1] for p in parts], ignore_index=True)
    dup = long[long["class_index"] == -1].duplicated(["run", "case_id"])
    if dup.any():
        runs_dup = sorted(long.loc[dup[dup].index, "run"].unique())
        raise InputError(f"aggregate: runs given twice (same task/model/attention/size/seed): {runs_dup}")
    check_out_of_fold(long)
    return long, curves


def check_out_of_fold(long: pd.DataFrame) -> None:
    """Refuse a case that two folds of one run group and seed both tested: out-of-fold predictions
    test each case once (the folds of one split); two splits' folds mixed would count it twice."""
    rows = long[(long["class_index"] == -1) & long[FOLD].notna()]
    keys = [*RUN_KEY_COLUMNS, "case_id"]
    twice = rows[rows.duplicated(keys, keep=False)]
    if not twice.empty:
        first = twice.iloc[0]
        runs = sorted(twice[twice["case_id"] == first["case_id"]]["run"].unique())
        raise InputError(f"aggregate: case {first['case_id']} is a test case of several folds ({', '.join(runs)}): "
                         "the folds come from different splits; re-run the split and these runs")


def read_long(path: str | Path) -> pd.DataFrame:
    """Read a long table written by :func:`aggregate` (string ``size`` and ``case_id`` kept)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: long table not found (run `mvl aggregate` first)")
    df = read_csv(path, "long table of `mvl aggregate`",
                  dtype={"size": str, "case_id": str, "class_name": str, "run": str, "device": str})
    if FOLD not in df.columns:  # written before cross-validation: every run used the single split
        df.insert(len(METRICS_COLUMNS), FOLD, pd.NA)
    missing = [c for c in LONG_COLUMNS if c not in df.columns]
    if missing:
        raise InputError(f"{path}: not a long table of this version; lacks columns {missing} (re-run `mvl aggregate`)")
    check_numeric(df, [FOLD, "params_total", "params_trainable", "epochs"], path, integer=True)
    check_numeric(df, ["train_seconds"], path)
    df[FOLD] = df[FOLD].astype("Int64")
    check_metrics(df, path)
    return df


def aggregate(runs: list[str | Path], out: str | Path, curves_out: str | Path | None = None) -> pd.DataFrame:
    """Write the long table to ``out`` (CSV) and, if given, all training curves to ``curves_out``
    (CSV, columns ``run, task, model, attention, size, seed, epoch, train_loss, train_dice,
    val_loss, val_dice, seconds``: one file DVC plots and ``mvl figures`` read)."""
    long, curves = aggregate_runs(runs)
    with atomic_path(out, suffix=".csv") as tmp:
        long.to_csv(tmp, index=False)
    if curves_out is not None:
        with atomic_path(curves_out, suffix=".csv") as tmp:
            curves.to_csv(tmp, index=False)
    return long


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mvl aggregate", description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="run folders, their metrics.csv files, or folders to search")
    parser.add_argument("--out", required=True, help="long table (CSV) to write")
    parser.add_argument("--curves", default=None, help="also write all runs' history.csv rows to this CSV")
    args = parser.parse_args(argv)
    long = aggregate(runs=args.runs, out=args.out, curves_out=args.curves)
    n_runs = long["run"].nunique()
    n_cases = int((long["class_index"] == -1).sum())
    print(f"aggregate: {n_runs} runs, {n_cases} test cases -> {args.out}")
    return 0
