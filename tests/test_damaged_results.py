"""Results that are damaged (cut short, binary, the wrong shape or type) are refused in one line
naming the file and what is wrong, by every reader: `mvl aggregate`, `mvl tables`, `mvl figures`,
the Python API. Shared results pass their checksums whatever their content, so the content itself
is checked; nothing is drawn or tabulated from a damaged file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_paper_fixtures import make_sample, write_run_dir

from medvisionllama import api
from medvisionllama.cli import main as mvl
from medvisionllama.errors import InputError
from medvisionllama.paper.aggregate import aggregate_runs, read_history, read_long
from medvisionllama.paper.figures import load_samples

TASK = "Task04_Hippocampus"
CASES = {"case00": 0.8, "case01": 0.6, "case02": 0.7}


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return write_run_dir(tmp_path / "runs", TASK, "vit", "hybrid-sequential", "16x16x8", 0, CASES)


def one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str], *expected: str) -> str:
    assert mvl(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    for text in expected:
        assert text in err, err
    return err


@pytest.mark.parametrize("content, says", [
    (b"", "empty; not a metrics.csv"),
    (b'case_id,dice\n"never closed', "not a readable metrics.csv"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe", "not a readable metrics.csv"),
])
def test_an_unreadable_metrics_csv_is_named(run_dir: Path, tmp_path: Path, capsys, content: bytes, says: str) -> None:
    (run_dir / "metrics.csv").write_bytes(content)
    out = tmp_path / "long.csv"
    one_line_error(capsys, ["aggregate", str(run_dir), "--out", str(out), "--curves", str(tmp_path / "c.csv")],
                   f"{run_dir / 'metrics.csv'}: {says}")
    assert not out.exists()
    with pytest.raises(InputError, match="metrics.csv"):
        api.read_metrics(run_dir)


@pytest.mark.parametrize("column, value, says", [
    ("dice", "abc", "dice 'abc' in data row 2 is not a number"),
    ("class_index", "1.5", "class_index '1.5' in data row 2 is not a whole number"),
])
def test_a_metric_that_is_not_a_number_is_named(run_dir: Path, tmp_path: Path, capsys, column, value, says) -> None:
    metrics = pd.read_csv(run_dir / "metrics.csv", dtype=str)
    metrics.loc[1, column] = value
    metrics.to_csv(run_dir / "metrics.csv", index=False)
    one_line_error(capsys, ["aggregate", str(run_dir), "--out", str(tmp_path / "l.csv"), "--curves", str(tmp_path / "c.csv")],
                   str(run_dir / "metrics.csv"), says)


def test_a_long_table_with_a_damaged_value_is_refused_before_any_table(run_dir: Path, tmp_path: Path) -> None:
    long, _ = aggregate_runs([run_dir])
    good = tmp_path / "long.csv"
    long.to_csv(good, index=False)
    read_long(good)  # as written: fine
    for column, value in (("dice", "0.7x"), ("seed", "zero"), ("train_seconds", "fast"), ("fold", "2.5")):
        damaged = long.astype(str).copy()
        damaged.loc[0, column] = value
        path = tmp_path / f"long-{column}.csv"
        damaged.to_csv(path, index=False)
        with pytest.raises(InputError, match=rf"^{path}: {column} '{value}' in data row 1 is not a"):
            read_long(path)


def test_a_history_with_text_in_a_loss_is_refused(run_dir: Path) -> None:
    history = pd.read_csv(run_dir / "history.csv", dtype=str)
    history.loc[2, "val_loss"] = "inf?"
    history.to_csv(run_dir / "history.csv", index=False)
    with pytest.raises(InputError, match=r"history.csv: val_loss 'inf\?' in data row 3 is not a number"):
        read_history(run_dir / "history.csv")


def test_samples_that_are_not_an_npz_archive_are_named(run_dir: Path) -> None:
    path = run_dir / "samples.npz"
    whole = path.read_bytes()
    for damaged in (whole[:300], b"", b"PK\x03\x04" + b"\x00" * 40):
        path.write_bytes(damaged)
        with pytest.raises(InputError, match=rf"^{path}: cannot read samples.npz \("):
            load_samples([path])


@pytest.mark.parametrize("change, says", [
    (lambda s: s.pop("pred"), "lacks pred"),
    (lambda s: s.update(image=s["image"][0]), "image has shape (48, 48)"),
    (lambda s: s.update(label=s["label"][:5]), "label has shape (5, 48)"),
    (lambda s: s.update(act_V_E=np.zeros((3, 3), np.float32)), "act_V_E has shape (3, 3)"),
    (lambda s: s.update(case0_image=s["image"][:1], case0_label=s["label"], case0_pred=s["pred"].T[:4]),
     "case0_pred has shape (4, 48)"),
    (lambda s: s.update(case1_image=s["image"][:1], case1_label=s["label"]), "lacks case1_pred"),
    (lambda s: s.update(label=np.full((48, 48), "x")), "label has shape (48, 48) (<U1)"),
    (lambda s: s.update(dice=np.array([0.1, 0.2])), "dice is not one number"),
])
def test_samples_that_break_the_contract_are_named(tmp_path: Path, change, says: str) -> None:
    sample = make_sample()
    change(sample)
    path = tmp_path / TASK / "vit" / "hybrid-sequential" / "16x16x8" / "seed0" / "samples.npz"
    path.parent.mkdir(parents=True)
    np.savez(path, **sample)
    with pytest.raises(InputError) as info:
        load_samples([path])
    assert str(info.value).startswith(f"{path}: not a samples.npz of `mvl evaluate`: ")
    assert says in str(info.value)


def test_samples_as_evaluate_writes_them_pass(run_dir: Path, tmp_path: Path) -> None:
    """Per-case slices, and a file of an earlier version with its one case (run_dir's)."""
    sample = make_sample()
    for i in range(3):
        sample |= {f"case{i}_image": sample["image"][:1], f"case{i}_label": sample["label"],
                   f"case{i}_pred": sample["pred"], f"case{i}_id": np.array(f"case0{i}"),
                   f"case{i}_dice": np.float32(0.5), f"case{i}_slice": np.int64(3)}
    copy = tmp_path / "copy" / TASK / "smollm2-135m" / "hybrid-sequential" / "16x16x8" / "seed0" / "samples.npz"
    copy.parent.mkdir(parents=True)
    np.savez(copy, **sample)
    assert len(load_samples([copy, run_dir / "samples.npz"])) == 2
