"""`record_lineage` in a real git + DVC repository: data inside it, in another folder of it, and
outside it on a read-only mount; a hand-edited output and a failing DVC command are refused and
leave every committed lineage file byte-identical.

The data stages run for real (the functions behind `mvl split` / `mvl preprocess`, on the paths
dvc.yaml names), on one tiny synthetic task.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import ROOT, env_with_venv
from data_helpers import make_task, read_only_bind, rewrite_nifti

from medvisionllama import lineage
from medvisionllama.data.io import load_nifti
from medvisionllama.data.preprocess import preprocess_task
from medvisionllama.data.split import split_task
from medvisionllama.errors import InputError
from medvisionllama.io_utils import TEMP_PATTERN
from medvisionllama.lineage import record_lineage

TASK = "Task09_Spleen"
SIZE = "8x8x4"
LINEAGE_FILES = ("params.yaml", "dvc.lock", "data.dvc", ".gitignore")
OUT = f"results/preprocessed/{TASK}/{SIZE}"
STAGE = f"preprocess_task@{TASK}-{SIZE}"


def dvc(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(["dvc", *args], cwd=repo, capture_output=True, text=True, env=env_with_venv())
    if check:
        assert result.returncode == 0, result.stderr[-2000:]
    return result


def params_for(data_dir: str) -> dict:
    return {
        "results_dir": "results",
        "data": {"dir": data_dir, "source": "synthetic", "synthetic": {"cases": 5, "max_dim": 16, "seed": 0}, "tasks": [TASK]},
        "split": {"seed": 0, "fractions": [0.6, 0.2, 0.2]},
        "preprocess": {"sizes": [SIZE], "workers": 1},
        "preprocessed": {f"{TASK}-{SIZE}": {"task": TASK, "size": SIZE}},
    }


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh git + DVC repository holding the project's dvc.yaml and .dvcignore; the cwd."""
    root = tmp_path / "repo"
    root.mkdir()
    for name in ("dvc.yaml", ".dvcignore"):
        shutil.copy2(ROOT / name, root / name)
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    dvc(root, "init", "-q")
    monkeypatch.chdir(root)
    monkeypatch.setenv("PATH", env_with_venv()["PATH"])
    return root


def run_data_stages(repo: Path, params: dict) -> None:
    """What Snakemake's split_task and preprocess_task jobs do, on dvc.yaml's paths."""
    data, results = Path(params["data"]["dir"]), repo / params["results_dir"]
    for task in params["data"]["tasks"]:
        split_task(data / task, results / "splits" / f"{task}.json", seed=params["split"]["seed"],
                   fractions=tuple(params["split"]["fractions"]), folds=params["split"].get("folds"))
    for stage in params["preprocessed"].values():
        task, size = stage["task"], stage["size"]
        preprocess_task(data / task, size, results / "preprocessed" / task / size, workers=1)


def snapshot(repo: Path) -> dict[str, bytes | None]:
    return {name: (repo / name).read_bytes() if (repo / name).is_file() else None for name in LINEAGE_FILES}


def assert_up_to_date(repo: Path) -> None:
    assert "Data and pipelines are up to date" in dvc(repo, "status").stdout


def files_below(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()]


def in_cache(repo: Path, file: Path) -> bool:
    md5 = hashlib.md5(file.read_bytes()).hexdigest()
    return (repo / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]).is_file()


def kill_synthesize_midway(data: Path) -> Path:
    """Start `mvl synthesize` into ``data`` and SIGKILL it once its temporary folder holds a file."""
    command = [sys.executable, "-m", "medvisionllama.cli", "synthesize", "--task", "Task01_BrainTumour",
               "--output", str(data / "Task01_BrainTumour"), "--cases", "40", "--max-dim", "96"]
    proc = subprocess.Popen(command, env=env_with_venv(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            temps = [p for p in data.glob(".Task01_BrainTumour.mvl-tmp-*") if files_below(p)]
            if temps:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                return temps[0]
            time.sleep(0.01)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    pytest.fail("mvl synthesize finished (or hung) before it could be killed midway")


def test_dvcignore_lists_the_atomic_writers_temporary_names() -> None:
    patterns = (ROOT / ".dvcignore").read_text().splitlines()
    assert TEMP_PATTERN in patterns and ".downloads/" in patterns


def test_data_inside_the_repository_leaves_out_what_killed_jobs_left(repo: Path) -> None:
    data = repo / "data"
    task = make_task(data, TASK, cases=5)
    leftover = kill_synthesize_midway(data)  # a real kill: `.Task01_BrainTumour.mvl-tmp-*/` stays
    assert not (data / "Task01_BrainTumour").exists()
    legacy = data / f".{TASK}.x1y2z3.tmp"  # what versions before the one pattern left
    shutil.copytree(task, legacy)
    (data / ".downloads").mkdir()
    (data / ".downloads" / "Task02_Heart.tar.part").write_bytes(b"\0" * 100)
    params = params_for("data")
    run_data_stages(repo, params)

    written = record_lineage(Path("data"), params)

    assert written == [Path("params.yaml"), Path("data.dvc"), Path("dvc.lock")]
    out = yaml.safe_load((repo / "data.dvc").read_text())["outs"][0]
    assert out["path"] == "data" and out["nfiles"] == len(files_below(task))  # only the task's files
    ignored = files_below(leftover) + files_below(legacy) + [data / ".downloads" / "Task02_Heart.tar.part"]
    assert not any(in_cache(repo, f) for f in ignored if f.read_bytes() not in {g.read_bytes() for g in files_below(task)})
    assert "/data" in (repo / ".gitignore").read_text().splitlines()
    assert_up_to_date(repo)
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    assert set(lock) == {f"split_task@{TASK}", f"preprocess_task@{TASK}-{SIZE}"}


def test_a_non_default_folder_inside_the_repository(repo: Path) -> None:
    make_task(repo / "data", "Task04_Hippocampus", cases=3)  # the demo's data, committed as data.dvc
    lineage.write_params(params_for("data"))  # dvc.yaml reads it: DVC fails without it
    dvc(repo, "add", "data")
    committed = (repo / "data.dvc").read_bytes()
    shutil.rmtree(repo / "data")  # a clone that never pulled the demo's data
    make_task(repo / "realdata", TASK, cases=5)
    params = params_for("realdata")
    run_data_stages(repo, params)

    written = record_lineage(Path("realdata"), params)

    assert written == [Path("params.yaml"), Path("realdata.dvc"), Path("dvc.lock")]
    assert (repo / "data.dvc").read_bytes() == committed  # the other .dvc file is left alone
    assert yaml.safe_load((repo / "realdata.dvc").read_text())["outs"][0]["path"] == "realdata"
    deps = yaml.safe_load((repo / "dvc.lock").read_text())["stages"][f"split_task@{TASK}"]["deps"]
    assert deps[0]["path"] == f"realdata/{TASK}"
    assert "up to date" in dvc(repo, "status", "dvc.yaml", "realdata.dvc").stdout
    assert "data.dvc" in dvc(repo, "status").stdout  # the truth about the other .dvc file: data/ is absent


def file_identities(*folders: Path) -> dict[str, tuple[int, int]]:
    """Every file below ``folders``: (inode, modification time); a file replaced by a copy, even an
    identical one, gets another inode."""
    return {str(p): (p.stat().st_ino, p.stat().st_mtime_ns) for folder in folders for p in files_below(folder)}


def test_the_lineage_job_leaves_the_files_running_jobs_read_in_place(repo: Path) -> None:
    """Snakemake runs `record_lineage` beside the training and evaluation jobs that read the split
    and the preprocessed arrays: DVC must not delete and re-create them (a split missing for an
    instant failed an evaluation in CI), neither on the first record nor on a later one."""
    make_task(repo / "data", TASK, cases=5)
    params = params_for("data")
    run_data_stages(repo, params)
    read_by_jobs = (repo / "data", repo / "results")
    before = file_identities(*read_by_jobs)
    assert any("splits" in name for name in before)

    record_lineage(Path("data"), params)
    after = file_identities(*read_by_jobs)  # (DVC adds a .gitignore beside each output)
    assert {name: after.get(name) for name in before} == before
    assert in_cache(repo, repo / "results" / "splits" / f"{TASK}.json")  # recorded all the same

    params["split"]["seed"] = 1  # a changed split: recorded again, with the cache already filled
    run_data_stages(repo, params)
    before = file_identities(*read_by_jobs)
    record_lineage(Path("data"), params)
    after = file_identities(*read_by_jobs)
    assert {name: after.get(name) for name in before} == before
    assert_up_to_date(repo)


@pytest.mark.slow  # runs DVC or the regenerate workflow end to end (the fast subset stays under 5 min)
def test_a_cross_validation_split_is_recorded_and_its_folds_cannot_change_unseen(repo: Path) -> None:
    """dvc.yaml's split stage passes split.folds: a k-fold split is recorded like the single one,
    `dvc repro` would make the same file, and folds changed without re-running the split are refused."""
    make_task(repo / "data", TASK, cases=6)
    params = params_for("data")
    params["split"]["folds"] = 3
    run_data_stages(repo, params)
    split = repo / "results" / "splits" / f"{TASK}.json"
    assert len(json.loads(split.read_text())["folds"]) == 3

    record_lineage(Path("data"), params)
    assert_up_to_date(repo)
    stage = yaml.safe_load((repo / "dvc.lock").read_text())["stages"][f"split_task@{TASK}"]
    assert "--folds '3'" in " ".join(stage["cmd"].split()) and stage["params"]["params.yaml"]["split.folds"] == 3

    before = snapshot(repo)
    params["split"]["folds"] = 2  # the config says 2 folds, but the split on disk still has 3
    with pytest.raises(InputError, match=rf"results/splits/{TASK}.json is not what stage split_task@{TASK}'s command makes"):
        record_lineage(Path("data"), params)
    assert snapshot(repo) == before
    run_data_stages(repo, params)  # re-split: now it is recorded
    record_lineage(Path("data"), params)
    assert_up_to_date(repo)
    assert len(json.loads(split.read_text())["folds"]) == 2


def test_the_single_split_passes_folds_none_to_dvc(repo: Path) -> None:
    """params.yaml always holds split.folds (null for the single split), which dvc.yaml's split
    stage passes as `--folds 'None'`: `mvl split`'s default, so the split is the same file."""
    make_task(repo / "data", TASK, cases=5)
    params = params_for("data")
    run_data_stages(repo, params)
    record_lineage(Path("data"), params)
    assert yaml.safe_load((repo / "params.yaml").read_text())["split"]["folds"] is None
    stage = yaml.safe_load((repo / "dvc.lock").read_text())["stages"][f"split_task@{TASK}"]
    assert "--folds 'None'" in " ".join(stage["cmd"].split())
    split = repo / "results" / "splits" / f"{TASK}.json"
    made = split.read_bytes()
    split.unlink()
    dvc(repo, "repro", f"split_task@{TASK}")  # DVC's own command makes the same file
    assert split.read_bytes() == made and "folds" not in json.loads(made)
    assert_up_to_date(repo)


def test_a_lineage_recorded_before_split_folds_is_carried_over(repo: Path) -> None:
    """params.yaml and dvc.lock as versions before split.folds wrote them (no folds key; the split
    command without --folds): the next record rewrites both, the split stays the same file, and DVC
    is up to date."""
    make_task(repo / "data", TASK, cases=5)
    params = params_for("data")
    run_data_stages(repo, params)
    record_lineage(Path("data"), params)
    body = (repo / "params.yaml").read_text().split(lineage.CONTENT_LINE)[1].split("\n", 1)[1]
    old_body = body.replace("  folds: null\n", "")
    assert old_body != body
    digest = hashlib.sha256(old_body.encode()).hexdigest()
    (repo / "params.yaml").write_text(f"# old header\n{lineage.CONTENT_LINE}{digest}\n{old_body}")
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    stage = lock["stages"][f"split_task@{TASK}"]
    stage["cmd"] = stage["cmd"].replace(" --folds 'None'", "")
    del stage["params"]["params.yaml"]["split.folds"]
    (repo / "dvc.lock").write_text(yaml.safe_dump(lock, sort_keys=False))
    split = repo / "results" / "splits" / f"{TASK}.json"
    made = (split.read_bytes(), split.stat().st_mtime_ns)

    record_lineage(Path("data"), params)

    assert "  folds: null\n" in (repo / "params.yaml").read_text()
    command = yaml.safe_load((repo / "dvc.lock").read_text())["stages"][f"split_task@{TASK}"]["cmd"]
    assert "--folds 'None'" in " ".join(command.split())
    assert (split.read_bytes(), split.stat().st_mtime_ns) == made
    assert_up_to_date(repo)


@pytest.fixture
def read_only_data(tmp_path: Path):
    """``(source, mount)``: a task folder outside the repository, and a read-only bind mount of it."""
    source, mount = tmp_path / "shared" / "msd", tmp_path / "ro" / "msd"
    make_task(source, TASK, cases=5)
    with read_only_bind(source, mount):
        yield source, mount


@pytest.mark.slow  # runs DVC or the regenerate workflow end to end (the fast subset stays under 5 min)
def test_data_outside_the_repository_and_read_only(repo: Path, read_only_data: tuple[Path, Path]) -> None:
    source, mount = read_only_data
    params = params_for(str(mount))
    run_data_stages(repo, params)

    written = record_lineage(mount, params)

    assert written == [Path("params.yaml"), Path("dvc.lock")]  # nothing added: no msd.dvc
    assert not [p for p in repo.glob("*.dvc") if p.is_file()] and not (mount.parent / "msd.dvc").exists()
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    dep = lock[f"split_task@{TASK}"]["deps"][0]
    assert dep["path"] == str(mount / TASK) and dep["md5"].endswith(".dir")
    assert dep["nfiles"] == len(files_below(mount / TASK))
    assert not any(in_cache(repo, f) for f in files_below(mount / TASK))  # hashed, not copied
    assert_up_to_date(repo)

    # the shared data changes (here through its writable source): dvc status says which task
    image = source / TASK / "imagesTr" / "synthetic_spleen_1.nii.gz"
    data = np.asanyarray(load_nifti(image).dataobj).copy()
    data[:4] = data.max()  # a change the preprocessed arrays show (a one-voxel nudge may vanish in the resize)
    rewrite_nifti(image, data)
    status = json.loads(dvc(repo, "status", "--json").stdout)
    assert status[f"split_task@{TASK}"][0]["changed deps"] == {str(mount / TASK): "modified"}
    assert status[f"preprocess_task@{TASK}-{SIZE}"][0]["changed deps"] == {str(mount / TASK): "modified"}

    # the pipeline did not re-run: recording now would claim the old outputs came from new data
    before = snapshot(repo)
    # (the split, older than the data too, is what its command makes from it: outputs are rewritten
    # only when their content changes, so an old time alone is not staleness; the arrays are not)
    with pytest.raises(InputError, match=rf"results/preprocessed/\S+ is older than {mount / TASK}, which changed since dvc.lock"):
        record_lineage(mount, params)
    assert snapshot(repo) == before

    run_data_stages(repo, params)  # the pipeline re-runs: now the lineage records the new data
    record_lineage(mount, params)
    assert_up_to_date(repo)
    assert yaml.safe_load((repo / "dvc.lock").read_text())["stages"][f"split_task@{TASK}"]["deps"][0]["md5"] != dep["md5"]


@pytest.mark.slow  # runs DVC or the regenerate workflow end to end (the fast subset stays under 5 min)
def test_a_hand_edited_output_is_refused_and_nothing_is_rewritten(repo: Path) -> None:
    make_task(repo / "data", TASK, cases=5)
    params = params_for("data")
    run_data_stages(repo, params)
    record_lineage(Path("data"), params)
    array = next((repo / "results" / "preprocessed" / TASK / SIZE / "cases").glob("*_image.npy"))
    edited = np.load(array)
    edited[0, 0, 0, 0] += 1.0
    np.save(array, edited)
    before = snapshot(repo)

    with pytest.raises(InputError) as info:
        record_lineage(Path("data"), params)

    message = str(info.value)
    assert message.startswith(
        f"results/preprocessed/{TASK}/{SIZE} changed since the pipeline wrote it: "
        "re-run `snakemake --forcerun preprocess_task` or restore it"
    )
    assert "\n" not in message
    assert snapshot(repo) == before
    status = json.loads(dvc(repo, "status", "--json").stdout)
    assert status == {f"preprocess_task@{TASK}-{SIZE}": [{"changed outs": {f"results/preprocessed/{TASK}/{SIZE}": "modified"}}]}

    run_data_stages(repo, params)  # what the message says: the pipeline makes it again
    record_lineage(Path("data"), params)
    assert snapshot(repo) == before and "up to date" in dvc(repo, "status").stdout


@pytest.mark.slow  # runs DVC or the regenerate workflow end to end (the fast subset stays under 5 min)
def test_outputs_changed_by_new_code_are_recorded_after_being_made_again(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Same data, same parameters, other bytes: what a change of the preprocessing code does. The
    stage's command makes them again identically, so they are the pipeline's, not a hand edit."""
    from medvisionllama.data import preprocess as module

    make_task(repo / "data", TASK, cases=5)
    params = params_for("data")
    current = module.normalise
    with monkeypatch.context() as patch:  # "the old code": shifted intensities
        patch.setattr(module, "normalise", lambda image, kind: (current(image, kind)[0] + 1.0, current(image, kind)[1]))
        run_data_stages(repo, params)
    record_lineage(Path("data"), params)
    old = yaml.safe_load((repo / "dvc.lock").read_text())["stages"][STAGE]["outs"][0]["md5"]
    run_data_stages(repo, params)  # the new (current) code

    record_lineage(Path("data"), params)

    assert yaml.safe_load((repo / "dvc.lock").read_text())["stages"][STAGE]["outs"][0]["md5"] != old
    assert_up_to_date(repo)
    assert not list((repo / ".dvc" / "tmp").glob("mvl-lineage-*"))  # the scratch copy is gone


def test_changed_parameters_are_recorded_not_refused(repo: Path) -> None:
    make_task(repo / "data", TASK, cases=5)
    params = params_for("data")
    run_data_stages(repo, params)
    record_lineage(Path("data"), params)
    params["split"]["seed"] = 7  # outputs differ from dvc.lock because their settings did
    run_data_stages(repo, params)
    record_lineage(Path("data"), params)
    assert_up_to_date(repo)
    assert yaml.safe_load((repo / "params.yaml").read_text())["split"]["seed"] == 7


@pytest.mark.slow  # runs DVC or the regenerate workflow end to end (the fast subset stays under 5 min)
def test_a_failing_dvc_command_leaves_every_lineage_file_as_it_was(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_task(repo / "data", TASK, cases=5)
    params = params_for("data")
    run_data_stages(repo, params)
    record_lineage(Path("data"), params)
    before = snapshot(repo)

    # 1. DVC refuses `dvc add realdata`: git already tracks it
    make_task(repo / "realdata", TASK, cases=5)
    subprocess.run(["git", "add", "realdata"], cwd=repo, check=True)
    run_data_stages(repo, params_for("realdata"))
    with pytest.raises(InputError) as info:
        record_lineage(Path("realdata"), params_for("realdata"))
    message = str(info.value)
    assert message.startswith("`dvc add --no-relink realdata` failed: ERROR") and "already tracked by SCM" in message
    assert "params.yaml, dvc.lock, realdata.dvc unchanged" in message and "\n" not in message
    assert snapshot(repo) == before and not (repo / "realdata.dvc").exists()

    # 2. the last command fails after params.yaml and data.dvc were rewritten
    other = params_for("data") | {"split": {"seed": 3, "fractions": [0.6, 0.2, 0.2]}}
    (repo / "data" / TASK / "extra.txt").write_text("new raw file: data.dvc changes")
    run_data_stages(repo, other)
    real = lineage._dvc

    def failing_commit(args: list[str], **kwargs) -> str:
        if args[0] == "commit":
            return real(["commit", "--force", "no_such_stage"], **kwargs)
        return real(args, **kwargs)

    monkeypatch.setattr(lineage, "_dvc", failing_commit)
    with pytest.raises(InputError, match=r"^`dvc commit --force no_such_stage` failed: ERROR"):
        record_lineage(Path("data"), other)
    assert snapshot(repo) == before


def test_data_below_a_tracked_folder_updates_that_folders_dvc_file(repo: Path) -> None:
    make_task(repo / "data", "Task04_Hippocampus", cases=3)
    lineage.write_params(params_for("data"))
    dvc(repo, "add", "data")
    make_task(repo / "data" / "msd", TASK, cases=5)
    params = params_for("data/msd")
    run_data_stages(repo, params)
    assert record_lineage(Path("data/msd"), params) == [Path("params.yaml"), Path("data.dvc"), Path("dvc.lock")]
    assert not (repo / "data" / "msd.dvc").exists()
    assert_up_to_date(repo)


LOCK = {"stages": {STAGE: {"outs": [{"path": OUT}]}}}


@pytest.mark.parametrize(
    ("changes", "lock", "message"),
    [
        ([{"changed outs": {OUT: "modified"}}], LOCK, "changed since the pipeline wrote it"),  # a hand edit
        ([{"changed outs": {OUT: "deleted"}}], LOCK, "missing, though stage"),
        ([{"changed outs": {OUT: "modified"}}], {}, None),  # a stage dvc.lock has not seen yet
        ([{"changed outs": {OUT: "not in cache"}}], LOCK, None),  # same hash, cache emptied
        ([{"changed deps": {"params.yaml": {"split.seed": "modified"}}}, {"changed outs": {OUT: "modified"}}], LOCK, None),
        (["changed command", {"changed outs": {OUT: "modified"}}], LOCK, None),  # e.g. other --workers
    ],
)
def test_what_counts_as_made_by_the_pipeline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, changes, lock, message) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / OUT).mkdir(parents=True)
    if message is None:
        lineage.check_outputs_made_by_pipeline({STAGE: changes}, lock)
        return
    with pytest.raises(InputError, match=message):
        lineage.check_outputs_made_by_pipeline({STAGE: changes}, lock)


def test_outputs_older_than_changed_data_are_stale_even_for_a_new_stage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / OUT).mkdir(parents=True)
    (tmp_path / OUT / "manifest.json").write_text("{}")
    os.utime(tmp_path / OUT / "manifest.json", (1_000_000, 1_000_000))
    os.utime(tmp_path / OUT, (1_000_000, 1_000_000))
    make_task(tmp_path / "data", TASK, cases=3)  # written after the output
    status = {STAGE: [{"changed deps": {f"data/{TASK}": "modified"}}, {"changed outs": {OUT: "modified"}}]}
    with pytest.raises(InputError, match=rf"{OUT} is older than data/{TASK}"):
        lineage.check_outputs_made_by_pipeline(status, {})
    os.utime(tmp_path / OUT / "manifest.json")  # the pipeline wrote it after the data
    lineage.check_outputs_made_by_pipeline(status, {})


def test_stages_dvc_yaml_no_longer_has_leave_dvc_lock(repo: Path) -> None:
    """dvc commit keeps lock entries of stages that are gone; the lineage drops them, so dvc.lock
    never claims an output of another configuration (here: an input size no experiment reads now)."""
    make_task(repo / "data", TASK, cases=5)
    params = params_for("data")
    run_data_stages(repo, params)
    record_lineage(Path("data"), params)
    other = "8x8x8"
    params["preprocess"]["sizes"] = [other]
    params["preprocessed"] = {f"{TASK}-{other}": {"task": TASK, "size": other}}
    run_data_stages(repo, params)

    record_lineage(Path("data"), params)

    stages = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    assert set(stages) == {f"split_task@{TASK}", f"preprocess_task@{TASK}-{other}"}
    assert_up_to_date(repo)


# --- nothing stale is certified (issue 19) ------------------------------------------------------


def test_a_params_yaml_edit_run_by_dvc_repro_is_refused_not_rewritten(repo: Path) -> None:
    """`sed seed: 0 -> 1 params.yaml && dvc repro`, then the pipeline's lineage step with config.yaml
    still at seed 0: rewriting params.yaml would pair `--seed '0'` with the seed-1 split."""
    make_task(repo / "data", TASK, cases=5)
    params = params_for("data")
    run_data_stages(repo, params)
    record_lineage(Path("data"), params)
    text = (repo / "params.yaml").read_text()
    assert "\n  seed: 0\n" in text.split("split:")[1]
    edited = text.replace("  - 0.2\n  seed: 0\n", "  - 0.2\n  seed: 1\n")
    assert edited != text
    (repo / "params.yaml").write_text(edited)
    dvc(repo, "repro", "dvc.yaml")
    split_after_repro = (repo / "results" / "splits" / f"{TASK}.json").read_bytes()
    assert json.loads(split_after_repro)["seed"] == 1
    before = snapshot(repo)

    with pytest.raises(InputError) as info:
        record_lineage(Path("data"), params)

    message = str(info.value)
    assert message.startswith("params.yaml was edited by hand (split.seed is 1, config.yaml says 0)")
    assert "put the change into config.yaml" in message and "\n" not in message
    assert snapshot(repo) == before  # the user's params.yaml (seed 1) and dvc.lock are left as they were
    # the way the message says: the change goes into the config, the pipeline makes the split again
    params["split"]["seed"] = 1
    run_data_stages(repo, params)
    record_lineage(Path("data"), params)
    assert_up_to_date(repo)
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"][f"split_task@{TASK}"]
    assert "--seed '1'" in lock["cmd"] and lock["params"]["params.yaml"]["split.seed"] == 1


def test_a_hand_edited_split_beside_a_hand_edited_dvc_lock_command_is_refused(repo: Path) -> None:
    make_task(repo / "data", TASK, cases=5)
    params = params_for("data")
    run_data_stages(repo, params)
    record_lineage(Path("data"), params)
    split_file = repo / "results" / "splits" / f"{TASK}.json"
    split = json.loads(split_file.read_text())
    split["train"].append(split["test"].pop())  # a test case moved into training by hand
    split_file.write_text(json.dumps(split))
    lock_text = (repo / "dvc.lock").read_text()
    (repo / "dvc.lock").write_text(lock_text.replace("--seed '0'", "--seed '3'"))  # "made by" another command
    before = snapshot(repo)

    with pytest.raises(InputError, match=rf"results/splits/{TASK}.json is not what stage split_task@{TASK}'s command makes now"):
        record_lineage(Path("data"), params)
    assert snapshot(repo) == before


@pytest.mark.slow  # runs DVC or the regenerate workflow end to end (the fast subset stays under 5 min)
def test_lineage_follows_results_dir_on_a_fresh_clone_and_refuses_a_second_results_folder(repo: Path) -> None:
    make_task(repo / "data", TASK, cases=5)
    params = params_for("data")
    run_data_stages(repo, params)
    written = record_lineage(Path("data"), params)
    lineage.write_record(repo / "results" / "lineage.json", Path("data"), written)

    # a second configuration in the same checkout, writing elsewhere: refused while results/ is certified
    other = dict(params, results_dir="other")
    run_data_stages(repo, other)
    before = snapshot(repo)
    with pytest.raises(InputError, match=r"results_dir other: this checkout's dvc.lock describes results "
                                         r"\(results/lineage.json certifies it\)"):
        record_lineage(Path("data"), other)
    assert snapshot(repo) == before

    # a fresh clone: the committed params.yaml and dvc.lock name results/, which does not exist; the
    # data is newer than everything dvc.lock names. Only results_dir changed: the lineage follows it.
    shutil.rmtree(repo / "results")
    for path in files_below(repo / "data"):
        os.utime(path)
    run_data_stages(repo, other)
    record_lineage(Path("data"), other)
    assert_up_to_date(repo)
    stages = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    assert stages[f"split_task@{TASK}"]["outs"][0]["path"] == f"other/splits/{TASK}.json"
