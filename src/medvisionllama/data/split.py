"""Seeded train/validation/test split of a task's labelled cases (the paper's 70/20/10).

Case ids are sorted before shuffling, so the split depends only on the set of cases and the
seed, not on the order ``dataset.json`` lists them in. The shuffle is Python's
``random.Random(seed).shuffle``, whose output is stable across Python and NumPy versions.

Rounding (largest remainder): each split first gets ``floor(n * fraction)`` cases; the cases
left over go one each to the splits with the largest fractional parts (ties: train, then val,
then test). Then every empty split takes one case from the largest split, so with three or more
cases each split has at least one. For 10 cases 70/20/10 gives 7/2/1; for 3 cases 1/1/1; for 5
cases 3/1/1.

k-fold cross-validation (``folds=K``, :func:`fold_cases`): every case is in exactly one fold's
``test``; fold sizes differ by at most one case. In a task with at most
:data:`STRATIFY_MAX_CASES` cases the folds are stratified by foreground size: the cases are
ordered by their label's foreground voxel count (ties broken by the seeded shuffle) and dealt out
in blocks of K, each block in a seeded order, so every fold gets one case of each size stratum
(cases without foreground first: a fold never holds all of them). Larger tasks are dealt from the
seeded shuffle alone. Within each fold, ``val`` is drawn (seeded by seed and fold) from the other
cases with the validation share of the fractions, ``val / (train + val)``, at least one case;
the rest is ``train``.
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
from medvisionllama.io_utils import read_json, write_json_atomic, write_text_atomic

SPLITS: tuple[str, str, str] = ("train", "val", "test")
#: tasks with at most this many cases get folds stratified by foreground size (see the docstring)
STRATIFY_MAX_CASES = 200


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


def folds_arg(text: str) -> int | None:
    """``--folds``: an integer K, or ``none``/``null`` (any case) for the single split (what DVC
    writes for ``${split.folds}`` when params.yaml holds ``folds: null``)."""
    if text.strip().lower() in {"none", "null", ""}:
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer K >= 2 or 'none', got {text!r}") from None


def check_folds(folds: Any, num_cases: int) -> int:
    """``folds`` as an int, or an ``InputError`` unless it is an integer in ``[2, num_cases]``
    (and leaves at least two cases outside each fold's test, for train and val)."""
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise InputError(f"split.folds must be an integer >= 2 (or null for the single split), got {folds!r}")
    if num_cases - math.ceil(num_cases / folds) < 2:
        raise InputError(f"split.folds {folds}: {num_cases} labelled cases are too few (each fold needs a test "
                         "case and two other cases for train and val)")
    return folds


def fold_cases(
    case_ids: list[str],
    folds: int,
    seed: int,
    fractions: tuple[float, float, float] = (0.7, 0.2, 0.1),
    sizes: dict[str, float] | None = None,
) -> list[dict[str, Any]]:
    """``[{"fold": k, "train": [...], "val": [...], "test": [...]}, ...]`` for ``k < folds``.

    ``sizes`` (case id -> foreground voxels) stratifies the folds by size (module docstring);
    None deals them from the seeded shuffle. Every case is in exactly one fold's ``test``.
    """
    if len(set(case_ids)) != len(case_ids):
        raise InputError("case ids must be unique")
    check_fractions(fractions)
    check_folds(folds, len(case_ids))
    order = sorted(case_ids)
    random.Random(seed).shuffle(order)
    if sizes is not None:
        rank = {case: i for i, case in enumerate(order)}
        order.sort(key=lambda case: (sizes[case], rank[case]))  # by size; ties in shuffled order
    dealer = random.Random(f"folds:{seed}")
    tests: list[list[str]] = [[] for _ in range(folds)]
    for start in range(0, len(order), folds):
        block = order[start : start + folds]
        targets = list(range(folds))
        dealer.shuffle(targets)
        targets = sorted(targets, key=lambda k: len(tests[k]))[: len(block)]  # the emptiest folds, in seeded order
        for case, k in zip(block, targets):
            tests[k].append(case)
    val_share = fractions[1] / (fractions[0] + fractions[1])
    result = []
    for k, test in enumerate(tests):
        rest = sorted(set(order) - set(test))
        random.Random(f"val:{seed}:{k}").shuffle(rest)
        n_val = min(max(1, round(len(rest) * val_share)), len(rest) - 1)
        result.append({"fold": k, "train": sorted(rest[n_val:]), "val": sorted(rest[:n_val]), "test": sorted(test)})
    return result


def foreground_sizes(cases: list[Any]) -> dict[str, float]:
    """Case id -> foreground voxel count of its label file (nibabel; labels only, no images)."""
    import nibabel as nib
    import numpy as np

    sizes = {}
    for case in cases:
        try:
            label = np.asanyarray(nib.load(str(case.label)).dataobj)
        except Exception as exc:  # nibabel raises several types for a damaged file
            raise InputError(f"{case.label}: cannot read the label ({exc})") from None
        sizes[case.case_id] = float(np.count_nonzero(label))
    return sizes


def split_task(
    task_dir: Path,
    output: Path,
    seed: int = 0,
    fractions: tuple[float, float, float] = (0.7, 0.2, 0.1),
    folds: int | None = None,
) -> dict[str, Any]:
    """Split the labelled cases of ``task_dir`` and write the split JSON to ``output`` atomically.

    Returns the written object: ``{"task", "seed", "fractions": {"train", "val", "test"},
    "train": [case ids], "val": [...], "test": [...]}`` (docs/contracts.md); with ``folds`` K also
    ``"folds": [{"fold", "train", "val", "test"}, ...]`` and ``"stratified_by"``
    (``"foreground voxels"`` or null) from :func:`fold_cases`.
    """
    fractions = tuple(float(f) for f in fractions)  # type: ignore[assignment]
    check_fractions(fractions)
    task_dir = Path(task_dir)
    cases = list_labelled_cases(task_dir)
    ids = [case.case_id for case in cases]
    splits = split_cases(ids, seed, fractions)
    result: dict[str, Any] = {
        "task": task_dir.name,
        "seed": seed,
        "fractions": dict(zip(SPLITS, fractions)),
        **splits,
    }
    if folds is not None:
        check_folds(folds, len(ids))
        sizes = foreground_sizes(cases) if len(ids) <= STRATIFY_MAX_CASES else None
        result["stratified_by"] = "foreground voxels" if sizes is not None else None
        result["folds"] = fold_cases(ids, folds, seed, fractions, sizes)
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


def _case_list(split: dict[str, Any], key: str, where: str) -> list[str]:
    value = split.get(key)
    if not isinstance(value, list) or not all(isinstance(c, str) for c in value):
        raise InputError(f"{where}: {key!r} must be a list of case ids")
    return value


def read_split(path: str | Path, fold: int | None = None) -> dict[str, list[str]]:
    """Read a split JSON, checking its shape: ``{"train": [...], "val": [...], "test": [...]}`` of
    the single split, or of fold ``fold`` of its ``folds`` (an ``InputError`` when it has none)."""

    path = Path(path)
    split = read_json(path, missing="split file does not exist")
    for key in SPLITS:
        _case_list(split, key, str(path))
    if fold is not None:
        entries = split.get("folds")
        if not isinstance(entries, list) or not entries:
            raise InputError(f"{path}: no 'folds' (written without split.folds), but fold {fold} was asked for")
        if not 0 <= fold < len(entries):
            raise InputError(f"{path}: fold {fold} does not exist; the split has folds 0..{len(entries) - 1}")
        entry = entries[fold]
        if not isinstance(entry, dict) or entry.get("fold") != fold:
            raise InputError(f"{path}: folds[{fold}] is not fold {fold}")
        split = {key: _case_list(entry, key, f"{path}: folds[{fold}]") for key in SPLITS}
    if not split["train"]:
        raise InputError(f"{path}: the train split is empty")
    return split


def nnunet_splits(split: dict[str, Any]) -> list[dict[str, list[str]]]:
    """nnU-Net's ``splits_final.json`` content for a split object: one ``{"train", "val"}`` per fold
    with ``val`` = the held-out fold (our ``test``) and ``train`` = the rest (our train and val);
    the single split gives one entry the same way."""
    entries = split.get("folds") or [split]
    return [{"train": sorted(entry["train"] + entry["val"]), "val": sorted(entry["test"])} for entry in entries]


def write_nnunet_splits(split_path: str | Path, output: str | Path) -> Path:
    """Write nnU-Net's ``splits_final.json`` for the split JSON ``split_path`` (atomically)."""
    split_path = Path(split_path)
    split = read_json(split_path, missing="split file does not exist")
    read_split(split_path)  # the shape check
    for k in range(len(split.get("folds") or [])):
        read_split(split_path, k)
    write_json_atomic(Path(output), nnunet_splits(split))
    return Path(output)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="mvl split", description="Split a task's labelled cases (seeded), or export a split for nnU-Net.",
        epilog="Export: `mvl split --from results/splits/TASK.json --nnunet splits_final.json` (one "
               "{train, val} per fold, val = the held-out fold); with --task-dir, --nnunet also exports "
               "the split just written.",
    )
    parser.add_argument("--task-dir", type=Path, help="MSD task folder (holds dataset.json)")
    parser.add_argument("--output", type=Path, help="split JSON to write")
    parser.add_argument("--from", dest="from_split", type=Path, help="an existing split JSON to export")
    parser.add_argument("--nnunet", type=Path, help="also write nnU-Net's splits_final.json here")
    parser.add_argument("--folds", type=folds_arg, default=None,
                        help="k-fold cross-validation: K folds, each case tested once; 'none' (the default): "
                             "the single split (dvc.yaml passes split.folds, which is None when unset)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--fractions", type=float, nargs=3, default=(0.7, 0.2, 0.1), metavar=("TRAIN", "VAL", "TEST"),
        help="split fractions, positive, summing to 1 (default 0.7 0.2 0.1)",
    )
    args = parser.parse_args(argv)
    if args.from_split is not None:
        if args.task_dir is not None or args.output is not None or args.nnunet is None:
            parser.error("--from takes --nnunet FILE and neither --task-dir nor --output")
        write_nnunet_splits(args.from_split, args.nnunet)
        return 0
    if args.task_dir is None or args.output is None:
        parser.error("--task-dir and --output are required (or --from SPLIT --nnunet FILE)")
    split_task(task_dir=args.task_dir, output=args.output, seed=args.seed, fractions=tuple(args.fractions),
               folds=args.folds)
    if args.nnunet is not None:
        write_nnunet_splits(args.output, args.nnunet)
    return 0
