"""Nothing stale is certified, nothing fresh is re-made: outputs are rewritten only when their bytes
change, a task's fingerprint moves exactly when its content does, aggregation skips superseded
runs, and a hand-edited params.yaml is recognised. (The whole DAG with these: test_external_data.py.)"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from data_helpers import first_case, make_task, rewrite_nifti

from medvisionllama.data.fingerprint import update_fingerprint
from medvisionllama.data.preprocess import preprocess_task
from medvisionllama.data.split import split_task
from medvisionllama.lineage import params_file_problem, write_params
from medvisionllama.paper.aggregate import find_run_dirs

TASK = "Task09_Spleen"
OLD = 1_000_000_000  # a time long past, to tell "left alone" from "rewritten"


def _age(*paths: Path) -> None:
    for path in paths:
        os.utime(path, (OLD, OLD))


def test_split_and_preprocess_rewrite_only_what_changed(tmp_path: Path) -> None:
    data = make_task(tmp_path / "data", TASK, cases=5, max_dim=16)
    split, pre = tmp_path / "splits" / f"{TASK}.json", tmp_path / "pre"
    split_task(data, split, seed=0, fractions=(0.6, 0.2, 0.2))
    preprocess_task(data, "8x8x4", pre)
    (pre / ".snakemake_timestamp").write_text("")  # what Snakemake leaves in a folder output
    files = [split, *pre.rglob("*"), pre]
    _age(*files)

    split_task(data, split, seed=0, fractions=(0.6, 0.2, 0.2))  # what `dvc repro` does: same bytes
    preprocess_task(data, "8x8x4", pre, workers=2)
    assert all(p.stat().st_mtime == OLD for p in files)  # nothing rewritten, times kept

    split_task(data, split, seed=1, fractions=(0.6, 0.2, 0.2))
    assert split.stat().st_mtime > OLD and json.loads(split.read_text())["seed"] == 1
    label = first_case(data)[1]
    array = np.asanyarray(__import__("nibabel").load(label).dataobj).copy()
    array[array > 0] = 0
    rewrite_nifti(label, array)
    preprocess_task(data, "8x8x4", pre)
    assert (pre / "manifest.json").stat().st_mtime > OLD
    assert not (pre / ".snakemake_timestamp").exists()  # a new folder: Snakemake sees it as new


def test_a_task_fingerprint_moves_exactly_when_its_content_does(tmp_path: Path) -> None:
    data = make_task(tmp_path / "data", TASK, cases=3, max_dim=12)
    other = make_task(tmp_path / "data", "Task04_Hippocampus", cases=3, max_dim=12)
    out, out_other = tmp_path / "fp" / f"{TASK}.json", tmp_path / "fp" / "Task04_Hippocampus.json"
    assert update_fingerprint(data, out) and update_fingerprint(other, out_other)
    newest = max(p.stat().st_mtime for p in data.rglob("*") if p.is_file())
    assert out.stat().st_mtime == newest  # a first fingerprint is as old as the data: re-runs nothing
    listed = json.loads(out.read_text())["files"]
    assert "dataset.json" in listed and len(listed) == len([p for p in data.rglob("*") if p.is_file()]) > 6
    (data / ".snakemake_timestamp").write_text("")  # hidden files are not data
    _age(out, out_other)

    image = first_case(data)[0]
    os.utime(image)  # touched, same bytes: the hash is cached by time, recomputed, equal
    assert not update_fingerprint(data, out) and out.stat().st_mtime == OLD
    before = image.read_bytes()
    array = np.asanyarray(__import__("nibabel").load(image).dataobj).copy()
    array[0, 0, 0] += 7
    rewrite_nifti(image, array)
    os.utime(image, ns=(image.stat().st_atime_ns, os.stat(out_other).st_mtime_ns))  # an edit keeping an old time
    assert image.read_bytes() != before
    assert update_fingerprint(data, out) and out.stat().st_mtime > OLD
    assert json.loads(out.read_text())["files"][image.relative_to(data).as_posix()] != listed[image.relative_to(data).as_posix()]
    assert not update_fingerprint(other, out_other) and out_other.stat().st_mtime == OLD  # the other task: untouched


def test_aggregate_skips_superseded_runs(tmp_path: Path) -> None:
    run = tmp_path / "runs" / TASK / "vit" / "hybrid-sequential" / "8x8x4" / "seed0"
    (run / "superseded").mkdir(parents=True)
    (run / "metrics.csv").write_text("x\n")
    (run / "superseded" / "metrics.csv").write_text("x\n")
    assert find_run_dirs([tmp_path / "runs"]) == [run.resolve()]


def _params() -> dict:
    return {
        "results_dir": "results",
        "data": {"dir": "data", "source": "synthetic", "tasks": [TASK]},
        "split": {"seed": 0, "fractions": [0.7, 0.2, 0.1]},
        "preprocess": {"sizes": ["8x8x4"], "workers": 2},
        "preprocessed": {f"{TASK}-8x8x4": {"task": TASK, "size": "8x8x4"}},
    }


def test_a_hand_edited_params_yaml_is_recognised(tmp_path: Path) -> None:
    params, path = _params(), tmp_path / "params.yaml"
    write_params(params, path)
    assert params_file_problem(params, path) is None
    _age(path)
    write_params(params, path)
    assert path.stat().st_mtime == OLD  # same content: left alone
    other = json.loads(json.dumps(params))
    other["split"]["seed"] = 3
    assert params_file_problem(other, path) is None  # the config changed: writing params.yaml is right
    path.write_text(path.read_text().replace("  seed: 0\n", "  seed: 1\n"))
    problem = params_file_problem(params, path)
    assert problem.startswith(f"{path} was edited by hand (split.seed is 1, config.yaml says 0)")
    assert "config.yaml" in problem and "\n" not in problem
    edited = yaml.safe_load(path.read_text())
    edited["split"]["seed"] = 0  # edited back to the config's values (only layout differs): fine
    path.write_text(path.read_text().splitlines(keepends=True)[2] + yaml.safe_dump(edited, indent=4))
    assert params_file_problem(params, path) is None
    path.write_text(yaml.safe_dump(params))  # an older params.yaml without the hash line: not an edit
    assert params_file_problem(dict(params, results_dir="elsewhere"), path) is None


@pytest.mark.parametrize("command, same", [
    ("mvl preprocess --task-dir 'd/T' --size '8x8x4' --output 'r/p' --workers '2'", True),
    ("mvl preprocess --task-dir 'd/T' --size '8x8x8' --output 'r/p' --workers '1'", False),
])
def test_only_speed_options_are_not_part_of_a_stage_command(command: str, same: bool) -> None:
    from medvisionllama.lineage import result_command

    base = "mvl preprocess --task-dir 'd/T' --size '8x8x4' --output 'r/p' --workers '1'"
    assert (result_command(command) == result_command(base)) is same
