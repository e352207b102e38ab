"""Seeded train/validation/test split of a task's labelled cases (the paper's 70/20/10).

Case ids are sorted before shuffling, so the split depends only on the set of cases and the
seed, not on the order ``dataset.json`` lists them in. The shuffle is Python's
``random.Random(seed).shuffle``, whose output is stable across Python and NumPy versions.

Rounding (largest remainder): each split first gets ``floor(n * fraction)`` cases; the cases
left over go one each to the splits with the largest fractional parts (ties: train, then val,
then test). Then every empty split takes one case from the largest split, so with three or more
cases each split has at least one. For 10 cases 70/20/10 gives 7/2/1; for 3 cases 1/1/1; for 5
cases 3/1/1.
"""

from __future__ import annotations

import argparse
import json
import math
import random
from pathlib import Path
from typing import Any

from medvisionllama.data.io import list_labelled_cases
from medvisionllama.errors import InputError
from medvisionllama.io_utils import read_json, write_text_atomic

SPLITS: tuple[str, str, str] = ("train", "val", "test")


def check_fractions(fractions: tuple[float, float, float]) -> None:
    """Raise :class:`InputError` unless ``fractions`` are three positive numbers summing to 1."""
    if len(fractions) != 3:
        raise InputError(f"--fractions needs three values (train val test), got {list(fractions)}")
    if any(not math.isfinite(f) or f <= 0 for f in fractions):
        raise InputError(f"--fractions must all be positive, got {list(fractions)}")
    if abs(sum(fractions) - 1.0) > 1e-6:
        raise InputError(f"--fractions must sum to 1, got {list(fractions)} (sum {sum(fractions):g})")


def split_counts(num_cases: int, fractions: tuple[float, float, float]) -> tuple[int, int, int]:
    """Cases per split (train, val, test) by the rounding described in the module docstring."""
    check_fractions(fractions)
    if num_cases < len(SPLITS):
        raise InputError(f"need at least {len(SPLITS)} labelled cases to split into train/val/test, got {num_cases}")
    exact = [num_cases * f for f in fractions]
    counts = [math.floor(x + 1e-9) for x in exact]
    by_remainder = sorted(range(3), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in by_remainder[: num_cases - sum(counts)]:
        counts[i] += 1
    for i in range(3):
        if counts[i] == 0:
            counts[max(range(3), key=lambda j: counts[j])] -= 1
            counts[i] = 1
    return counts[0], counts[1], counts[2]


def split_cases(case_ids: list[str], seed: int, fractions: tuple[float, float, float]) -> dict[str, list[str]]:
    """``{"train": [...], "val": [...], "test": [...]}``, each sorted, from a seeded shuffle."""
    if len(set(case_ids)) != len(case_ids):
        raise InputError("case ids must be unique")
    n_train, n_val, _ = split_counts(len(case_ids), fractions)
    order = sorted(case_ids)
    random.Random(seed).shuffle(order)
    return {
        "train": sorted(order[:n_train]),
        "val": sorted(order[n_train : n_train + n_val]),
        "test": sorted(order[n_train + n_val :]),
    }


def split_task(
    task_dir: Path, output: Path, seed: int = 0, fractions: tuple[float, float, float] = (0.7, 0.2, 0.1)
) -> dict[str, Any]:
    """Split the labelled cases of ``task_dir`` and write the split JSON to ``output`` atomically.

    Returns the written object: ``{"task", "seed", "fractions": {"train", "val", "test"},
    "train": [case ids], "val": [...], "test": [...]}`` (docs/contracts.md).
    """
    fractions = tuple(float(f) for f in fractions)  # type: ignore[assignment]
    check_fractions(fractions)
    task_dir = Path(task_dir)
    cases = list_labelled_cases(task_dir)
    splits = split_cases([case.case_id for case in cases], seed, fractions)
    result = {
        "task": task_dir.name,
        "seed": seed,
        "fractions": dict(zip(SPLITS, fractions)),
        **splits,
    }
    write_json_if_changed(output, result)
    return result


def write_json_if_changed(target: Path, data: Any) -> bool:
    """Write ``data`` as stable JSON to ``target`` atomically, unless ``target`` already holds these
    exact bytes: then it is left alone, modification time included, so a re-run that makes the same
    split (``dvc repro``, a forced Snakemake job) leaves Snakemake nothing to re-run downstream.
    Returns whether the file was written."""
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    target = Path(target)
    try:
        if target.is_file() and target.read_text() == text:
            return False
    except (OSError, UnicodeDecodeError):
        pass
    write_text_atomic(target, text)
    return True


def read_split(path: str | Path) -> dict[str, list[str]]:
    """Read a split JSON (``{"train": [...], "val": [...], "test": [...]}``), checking its shape."""

    path = Path(path)
    split = read_json(path, missing="split file does not exist")
    for key in ("train", "val", "test"):
        if not isinstance(split.get(key), list) or not all(isinstance(c, str) for c in split[key]):
            raise InputError(f"{path}: {key!r} must be a list of case ids")
    if not split["train"]:
        raise InputError(f"{path}: the train split is empty")
    return split


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mvl split", description="Split a task's labelled cases (seeded).")
    parser.add_argument("--task-dir", required=True, type=Path, help="MSD task folder (holds dataset.json)")
    parser.add_argument("--output", required=True, type=Path, help="split JSON to write")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--fractions", type=float, nargs=3, default=(0.7, 0.2, 0.1), metavar=("TRAIN", "VAL", "TEST"),
        help="split fractions, positive, summing to 1 (default 0.7 0.2 0.1)",
    )
    args = parser.parse_args(argv)
    split_task(task_dir=args.task_dir, output=args.output, seed=args.seed, fractions=tuple(args.fractions))
    return 0
