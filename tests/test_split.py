"""Seeded 70/20/10 splits: proportions, determinism, order independence, coverage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from data_helpers import make_task

from medvisionllama.cli import main as cli_main
from medvisionllama.data.split import split_cases, split_counts, split_task
from medvisionllama.errors import InputError


@pytest.mark.parametrize(
    ("num_cases", "expected"),
    [(3, (1, 1, 1)), (4, (2, 1, 1)), (5, (3, 1, 1)), (10, (7, 2, 1)), (20, (14, 4, 2)), (484, (339, 97, 48))],
)
def test_counts_round_to_paper_proportions(num_cases: int, expected: tuple[int, int, int]) -> None:
    assert split_counts(num_cases, (0.7, 0.2, 0.1)) == expected


@pytest.mark.parametrize("num_cases", range(3, 40))
def test_every_split_nonempty_and_counts_sum(num_cases: int) -> None:
    counts = split_counts(num_cases, (0.7, 0.2, 0.1))
    assert sum(counts) == num_cases and min(counts) >= 1
    if num_cases >= 10:  # below that, the one-case minimum of val and test dominates
        assert all(abs(n - f * num_cases) < 1.0 for n, f in zip(counts, (0.7, 0.2, 0.1)))


def test_split_is_deterministic_and_seed_dependent() -> None:
    ids = [f"case_{i:03d}" for i in range(30)]
    a = split_cases(ids, seed=0, fractions=(0.7, 0.2, 0.1))
    assert a == split_cases(ids, seed=0, fractions=(0.7, 0.2, 0.1))
    assert a != split_cases(ids, seed=1, fractions=(0.7, 0.2, 0.1))
    assert a == split_cases(list(reversed(ids)), seed=0, fractions=(0.7, 0.2, 0.1))


def test_split_task_covers_all_cases_without_overlap(tmp_path: Path) -> None:
    task_dir = make_task(tmp_path, "Task04_Hippocampus", cases=10, max_dim=12)
    out = tmp_path / "splits" / "Task04_Hippocampus.json"
    result = split_task(task_dir, out, seed=0)
    assert json.loads(out.read_text()) == result
    assert result["task"] == "Task04_Hippocampus" and result["seed"] == 0
    assert result["fractions"] == {"train": 0.7, "val": 0.2, "test": 0.1}
    train, val, test = (set(result[k]) for k in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (7, 2, 1)
    assert not (train & val or train & test or val & test)
    assert train | val | test == {f"synthetic_hippocampus_{i:03d}" for i in range(1, 11)}


def test_split_does_not_depend_on_dataset_json_order(tmp_path: Path) -> None:
    task_dir = make_task(tmp_path, "Task04_Hippocampus", cases=6, max_dim=12)
    before = split_task(task_dir, tmp_path / "a.json", seed=4)
    dataset_path = task_dir / "dataset.json"
    dataset = json.loads(dataset_path.read_text())
    dataset["training"] = dataset["training"][::-1]
    dataset_path.write_text(json.dumps(dataset))
    assert split_task(task_dir, tmp_path / "b.json", seed=4) == before


@pytest.mark.parametrize("fractions", [(0.7, 0.2, 0.2), (0.8, 0.2, 0.0), (1.2, -0.1, -0.1)])
def test_bad_fractions_are_input_errors(tmp_path: Path, fractions: tuple[float, float, float]) -> None:
    task_dir = make_task(tmp_path, "Task04_Hippocampus", cases=3, max_dim=12)
    out = tmp_path / "split.json"
    with pytest.raises(InputError, match="--fractions"):
        split_task(task_dir, out, fractions=fractions)
    assert not out.exists()


def test_too_few_cases_is_an_input_error() -> None:
    with pytest.raises(InputError, match="at least 3"):
        split_cases(["a", "b"], seed=0, fractions=(0.7, 0.2, 0.1))


def test_cli_split(tmp_path: Path) -> None:
    task_dir = make_task(tmp_path, "Task04_Hippocampus", cases=5, max_dim=12)
    out = tmp_path / "splits" / "Task04_Hippocampus.json"
    code = cli_main(["split", "--task-dir", str(task_dir), "--output", str(out), "--seed", "0", "--fractions", "0.6", "0.2", "0.2"])
    assert code == 0
    result = json.loads(out.read_text())
    assert [len(result[k]) for k in ("train", "val", "test")] == [3, 1, 1]


# ------------------------------------------------------------------------- k-fold cross-validation
from medvisionllama.data.split import fold_cases, nnunet_splits, read_split  # noqa: E402


@pytest.mark.parametrize(("num_cases", "folds"), [(5, 2), (20, 5), (32, 5), (41, 5), (63, 5), (13, 4)])
def test_folds_test_every_case_exactly_once_and_partition_each_fold(num_cases: int, folds: int) -> None:
    ids = [f"case_{i:03d}" for i in range(num_cases)]
    result = fold_cases(ids, folds, seed=3)
    tested = [c for entry in result for c in entry["test"]]
    assert sorted(tested) == ids  # every case tested once, none twice
    assert [entry["fold"] for entry in result] == list(range(folds))
    sizes = [len(entry["test"]) for entry in result]
    assert max(sizes) - min(sizes) <= 1
    for entry in result:
        train, val, test = (set(entry[k]) for k in ("train", "val", "test"))
        assert train | val | test == set(ids) and not (train & val or train & test or val & test)
        assert val and train
        rest = num_cases - len(test)  # val takes the val share of the non-test cases (2/9 for 70/20/10)
        assert abs(len(val) - rest * 2 / 9) <= 1


def test_folds_are_seeded_and_independent_of_listing_order() -> None:
    ids = [f"case_{i:03d}" for i in range(20)]
    a = fold_cases(ids, 5, seed=0)
    assert a == fold_cases(list(reversed(ids)), 5, seed=0)
    assert a != fold_cases(ids, 5, seed=1)


def test_folds_are_stratified_by_foreground_size() -> None:
    """Four cases without foreground and a wide size range: without stratification some fold gets
    two empty cases or only large ones for many seeds; with it, every seed deals one per fold."""
    ids = [f"case_{i:03d}" for i in range(20)]
    sizes = {c: (0.0 if i < 4 else float(10 ** (1 + i // 4))) for i, c in enumerate(ids)}
    unbalanced = 0
    for seed in range(20):
        for stratified in (True, False):
            result = fold_cases(ids, 4, seed, sizes=sizes if stratified else None)
            per_fold = [sorted(sizes[c] for c in entry["test"]) for entry in result]
            balanced = all(fold == sorted(set(sizes.values())) for fold in per_fold)
            if stratified:
                assert balanced, (seed, per_fold)  # one case of each of the five size strata per fold
            else:
                unbalanced += not balanced
    assert unbalanced >= 15  # the plain shuffle rarely balances: stratification is doing the work


def test_folds_refuse_too_few_cases_and_bad_k() -> None:
    with pytest.raises(InputError, match="too few"):
        fold_cases(["a", "b", "c"], 2, seed=0)
    for bad in (1, 0, True, 2.5):
        with pytest.raises(InputError, match="split.folds"):
            fold_cases([f"c{i}" for i in range(10)], bad, seed=0)  # type: ignore[arg-type]


def test_split_task_with_folds_keeps_the_single_split_and_reads_each_fold(tmp_path: Path) -> None:
    task_dir = make_task(tmp_path, "Task02_Heart", cases=10, max_dim=12)
    out = tmp_path / "splits" / "Task02_Heart.json"
    single = split_task(task_dir, tmp_path / "single.json", seed=0)
    result = split_task(task_dir, out, seed=0, folds=5)
    assert {k: result[k] for k in ("task", "seed", "fractions", "train", "val", "test")} == single
    assert result["stratified_by"] == "foreground voxels" and len(result["folds"]) == 5
    for k in range(5):
        assert read_split(out, fold=k) == {s: result["folds"][k][s] for s in ("train", "val", "test")}
    assert all(read_split(out)[s] == single[s] for s in ("train", "val", "test"))
    with pytest.raises(InputError, match="fold 5 does not exist"):
        read_split(out, fold=5)
    with pytest.raises(InputError, match="no 'folds'"):
        read_split(tmp_path / "single.json", fold=0)


def test_nnunet_splits_final_json_export(tmp_path: Path) -> None:
    """nnU-Net's schema: a list with one {"train", "val"} per fold; val = the held-out fold."""
    task_dir = make_task(tmp_path, "Task02_Heart", cases=10, max_dim=12)
    split = tmp_path / "Task02_Heart.json"
    nnunet = tmp_path / "splits_final.json"
    assert cli_main(["split", "--task-dir", str(task_dir), "--output", str(split), "--folds", "5",
                     "--nnunet", str(nnunet)]) == 0
    written = json.loads(nnunet.read_text())
    folds = json.loads(split.read_text())["folds"]
    assert isinstance(written, list) and len(written) == 5
    for entry, fold in zip(written, folds):
        assert set(entry) == {"train", "val"} and entry["val"] == fold["test"]
        assert sorted(entry["train"] + entry["val"]) == sorted(fold["train"] + fold["val"] + fold["test"])
    assert sorted(c for entry in written for c in entry["val"]) == sorted(written[0]["train"] + written[0]["val"])
    again = tmp_path / "again.json"
    assert cli_main(["split", "--from", str(split), "--nnunet", str(again)]) == 0
    assert json.loads(again.read_text()) == written
    single = nnunet_splits({"train": ["a"], "val": ["b"], "test": ["c"]})
    assert single == [{"train": ["a", "b"], "val": ["c"]}]
