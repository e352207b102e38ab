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
