"""The whole DAG on MSD-layout data kept outside the repository, on a read-only mount.

What a researcher with the Decathlon already on disk does: `data.source: msd`, `data.dir:` an
absolute path elsewhere. The tasks are written by the test (multi-channel MR, anisotropic CT in an
LPS frame), bind-mounted read-only (root ignores chmod), and the real `snakemake` runs to tables
and figures: nothing is downloaded, nothing is written into the data, dvc.lock hashes the task
folders in place, and `dvc status` tells when one of their files changes.

Then what a user does next, each followed by what Snakemake and DVC say (issue 19): `dvc repro`
rewriting byte-identical outputs, speed-only settings, deleted run outputs, a hand-edited
params.yaml, and one label fixed in place inside the read-only data: exactly that task is split,
preprocessed, retrained and tabulated again (the old runs set aside whole), and nothing else.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml
from conftest import copy_project, env_with_venv, tiny_config
from data_helpers import first_case, make_task, mount, read_only_bind, rewrite_nifti, tree_bytes

pytestmark = pytest.mark.slow

TASKS = ["Task05_Prostate", "Task09_Spleen"]  # 2-channel MR; single-channel CT, LPS, 17 x 17 x 56 mm voxels


@pytest.fixture
def external_data(tmp_path: Path):
    """``(mount_point, source)``: MSD task folders written under ``source`` and bind-mounted
    read-only at ``mount_point``, both outside the project copy."""
    source, point = tmp_path / "shared" / "msd", tmp_path / "datasets" / "msd"
    for task in TASKS:
        make_task(source, task, cases=6, max_dim=24)
    with read_only_bind(source, point):
        yield point, source


def run(command: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=cwd, env=env_with_venv(), capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    return result


def test_the_dag_runs_on_read_only_msd_data_outside_the_repository(tmp_path: Path, external_data) -> None:
    point, source = external_data
    # the layout a real Decathlon has: 4D multi-channel MR, anisotropic CT in an LPS frame
    prostate = nib.load(first_case(point / "Task05_Prostate")[0])
    spleen = nib.load(first_case(point / "Task09_Spleen")[0])
    assert prostate.ndim == 4 and prostate.shape[3] == 2
    assert nib.aff2axcodes(spleen.affine) == ("L", "P", "S")
    zooms = spleen.header.get_zooms()[:3]
    assert max(zooms) / min(zooms) > 3
    assert not list(point.rglob(".mvl-download.json"))  # the user's own folder: no download marker
    data_before = tree_bytes(point)

    project = copy_project(tmp_path / "project")
    config = tiny_config()
    config["data"].update(source="msd", dir=str(point), tasks=TASKS)
    config["training"].update(epochs=1)
    config["experiments"] = {"main": {"tasks": "all", "models": ["vit", "mlp"]}}  # the cheapest table
    (project / "config.yaml").write_text(yaml.safe_dump(config))
    committed_data_dvc = (project / "data.dvc").read_bytes()

    result = run(["snakemake", "--cores", "2"], project)

    assert "download_task" not in result.stdout + result.stderr  # the folders are inputs, not outputs
    assert not (project / "logs" / "download_task").exists()
    assert tree_bytes(point) == data_before  # nothing written into the data
    results = project / "results"
    assert (results / "tables" / "main.md").stat().st_size > 0
    assert list((results / "figures").glob("*.png"))
    record = json.loads((results / "lineage.json").read_text())
    assert record["data"] == str(point) and record["tracked_by"].startswith("dvc.lock")
    assert (project / "data.dvc").read_bytes() == committed_data_dvc  # the demo's .dvc file is left alone
    assert not [p.name for p in project.glob("*.dvc") if p.is_file() and p.name != "data.dvc"]  # and no other is made

    # dvc.lock hashes each external task folder in place; nothing of it enters the DVC cache
    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]
    for task in TASKS:
        dep = lock[f"split_task@{task}"]["deps"][0]
        assert dep["path"] == str(point / task) and dep["md5"].endswith(".dir")
    stages = sorted(s for s in lock if s.startswith("preprocess_task@"))
    assert stages == [f"preprocess_task@{task}-16x16x8" for task in TASKS]  # only the size the runs read
    cache = project / ".dvc" / "cache"
    cached = {p.name for p in cache.rglob("*") if p.is_file()} if cache.exists() else set()
    assert not cached & {hashlib.md5(b).hexdigest()[2:] for b in data_before.values()}
    # the data stages are up to date (data.dvc, the demo's data/, is not pulled in this copy)
    assert "Data and pipelines are up to date" in run(["dvc", "status", "dvc.yaml"], project).stdout
    again = run(["snakemake", "-n", "--cores", "2"], project)
    assert "Nothing to be done" in again.stdout + again.stderr

    runs = results / "runs"
    checkpoints = {p: p.read_bytes() for p in runs.rglob("checkpoint_last.pt")}
    assert len(checkpoints) == 4

    # DVC re-runs every data stage; the outputs are byte-identical, so Snakemake has nothing to do
    run(["dvc", "repro", "--force", "dvc.yaml"], project)
    assert "Nothing to be done" in planned(project)
    # settings that cannot change a result re-run no split, preprocessing, training or evaluation
    for key, value in (("preprocess", {"workers": 1}), ("training", {"device": "cpu", "num_workers": 1, "threads": 2})):
        changed = yaml.safe_load((project / "config.yaml").read_text())
        changed[key].update(value)
        (project / "config.yaml").write_text(yaml.safe_dump(changed))
        assert not {"split_task", "preprocess_task", "train_run", "evaluate_run"} & jobs(planned(project)).keys(), key
    (project / "config.yaml").write_text(yaml.safe_dump(config))
    # a deleted run output is seen
    vit = runs / "Task05_Prostate" / "vit"
    metrics = next(vit.rglob("metrics.csv"))
    metrics.unlink()
    assert "evaluate_run" in jobs(planned(project)) and "train_run" not in jobs(planned(project))
    next(vit.rglob("history.csv")).unlink()
    assert "train_run" in jobs(planned(project))
    # params.yaml is written from config.yaml: a hand edit stops Snakemake before any job
    params = (project / "params.yaml").read_text()
    (project / "params.yaml").write_text(params.replace("\n  seed: 0\n", "\n  seed: 1\n"))  # split.seed
    refused = subprocess.run(["snakemake", "-n"], cwd=project, env=env_with_venv(), capture_output=True, text=True)
    assert refused.returncode != 0
    assert "params.yaml was edited by hand (split.seed is 1, config.yaml says 0)" in refused.stdout + refused.stderr
    (project / "params.yaml").write_text(params)
    run(["snakemake", "--cores", "2"], project)  # puts back the deleted outputs (same inputs: no retraining)
    assert {p: p.read_bytes() for p in runs.rglob("checkpoint_last.pt") if "superseded" not in p.parts} == checkpoints

    # an annotator fixes one training label in place inside the shared data
    label = first_case(source / "Task09_Spleen")[1]
    assert mount("-o", "remount,rw,bind", str(point)).returncode == 0
    try:
        array = np.asanyarray(nib.load(point / label.relative_to(source)).dataobj).copy()
        foreground = np.argwhere(array > 0)
        array[tuple(foreground[: len(foreground) // 2].T)] = 0  # half of the foreground removed
        rewrite_nifti(point / label.relative_to(source), array)
    finally:
        assert mount("-o", "remount,ro,bind", str(point)).returncode == 0
    # dvc status says which task's stages are stale
    status = json.loads(run(["dvc", "status", "--json", "dvc.yaml"], project).stdout)
    changed = {str(point / "Task09_Spleen"): "modified"}
    assert status == {
        "split_task@Task09_Spleen": [{"changed deps": changed}],
        "preprocess_task@Task09_Spleen-16x16x8": [{"changed deps": changed}],
    }
    # and so does Snakemake, with no option: exactly that task's split, preprocessing, runs and the tables
    plan = planned(project)
    assert "task=Task05_Prostate" not in plan and "task=Task09_Spleen" in plan  # the jobs' wildcards
    assert {"split_task": 1, "preprocess_task": 1, "train_run": 2, "evaluate_run": 2}.items() <= jobs(plan).items()
    result = run(["snakemake", "--cores", "2"], project)
    for path, old in checkpoints.items():
        if "Task09_Spleen" in path.parts:  # retrained, the old run kept whole beside it
            assert path.read_bytes() != old
            aside = path.parent / "superseded"
            assert (aside / "checkpoint_last.pt").read_bytes() == old
            assert {"run.json", "history.csv", "metrics.csv", "predictions"} <= {p.name for p in aside.iterdir()}
            new_inputs = json.loads((path.parent / "run.json").read_text())["inputs"]
            assert new_inputs["preprocessed"] != json.loads((aside / "run.json").read_text())["inputs"]["preprocessed"]
        else:
            assert path.read_bytes() == old
    log = "".join(p.read_text() for p in (project / "logs" / "train_run" / "Task09_Spleen").rglob("*.log"))
    assert "the preprocessed arrays" in log and "changed" in log
    long = (results / "long.csv").read_text()
    assert "superseded" not in long
    assert "Data and pipelines are up to date" in run(["dvc", "status", "dvc.yaml"], project).stdout
    assert "Nothing to be done" in planned(project)


def planned(project: Path) -> str:
    """What `snakemake -n` prints (stdout and stderr)."""
    result = run(["snakemake", "-n", "--cores", "2"], project)
    return result.stdout + result.stderr


def jobs(plan: str) -> dict[str, int]:
    """The job counts of a dry run's "Job stats" table."""
    counts = {}
    if "Job stats:" in plan:
        for line in plan.split("Job stats:", 1)[1].splitlines()[3:]:
            parts = line.split()
            if len(parts) != 2 or not parts[1].isdigit() or parts[0] == "total":
                break
            counts[parts[0]] = int(parts[1])
    return counts
