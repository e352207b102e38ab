"""A reviewer regenerates every table, figure and the report from shared results.

An author runs the real DAG on a tiny config (2 tasks x 2 models, 1 epoch), `mvl share`s to a
local-folder DVC remote and commits; a reviewer `git clone`s, `dvc pull`s the results only and
runs `mvl regenerate`: no raw data, no training. The same from an archive with a checksum.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml
from conftest import copy_project, env_with_venv, tiny_config

from medvisionllama.errors import InputError
from medvisionllama.regenerate import REVIEWER_DIR
from medvisionllama.share import MANIFEST, SHARE_DIR, SUMMARY_DIR, shareable_files

pytestmark = pytest.mark.slow
GIT = ["git", "-c", "user.name=author", "-c", "user.email=author@example.org"]


def sh(command: list[str], cwd: Path, ok: bool = True, timeout: int = 900) -> subprocess.CompletedProcess:
    done = subprocess.run(command, cwd=cwd, env=env_with_venv(), capture_output=True, text=True, timeout=timeout)
    if ok:
        assert done.returncode == 0, f"{' '.join(command)}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def tables_digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def author(tmp_path_factory) -> dict:
    """The author's repository after the tiny DAG, `mvl share` and a commit; and the remote."""
    root = tmp_path_factory.mktemp("reviewer")
    project = copy_project(root / "author")
    config = tiny_config()
    config["preprocess"]["sizes"] = ["16x16x8"]
    config["training"]["epochs"] = 1
    config["experiments"] = {"main": {"tasks": "all", "models": ["vit", "mlp"]}}
    config["lineage"]["dvc"] = False
    (project / "config.yaml").write_text(yaml.safe_dump(config))
    sh(["snakemake", "--cores", "2"], project)
    # the DVC views work right after the pipeline, before any share (its last rule writes the summary)
    shown = json.loads(sh(["dvc", "metrics", "show", "--json"], project).stdout)
    metrics = next(iter(shown.values()))["data"]
    assert "shared-summary/metrics/main/vit.json" in metrics and all("error" not in v for v in metrics.values())
    # summary.json is optional (runs evaluated before it existed): only the first run keeps its
    # own, so both states must share
    run_dirs = sorted(p.parent for p in (project / "results/runs").rglob("run.json"))
    assert all((run / "summary.json").is_file() for run in run_dirs)  # evaluation writes it
    for run in run_dirs[1:]:
        (run / "summary.json").unlink()
    remote = root / "remote"
    sh(["dvc", "remote", "add", "-d", "local", str(remote)], project)
    shared = sh(["mvl", "share"], project)
    assert ".dvc/config" in shared.stdout  # the author is told to commit the remote's address
    sh(["git", "add", "-A"], project)
    sh([*GIT, "commit", "-qm", "results of the tiny run"], project)
    return {"root": root, "project": project, "remote": remote, "runs": run_dirs, "share_stdout": shared.stdout,
            "config": config}


def clone(author: dict, name: str) -> Path:
    target = author["root"] / name
    sh(["git", "clone", "-q", str(author["project"]), str(target)], author["root"])
    return target


def check_regenerated(author: dict, reviewer: Path) -> None:
    original, again = author["project"] / "results", reviewer / REVIEWER_DIR
    assert tables_digest(again / "tables") == tables_digest(original / "tables")  # byte for byte
    figures = sorted(p.name for p in (original / "figures").iterdir())
    assert figures and sorted(p.name for p in (again / "figures").iterdir()) == figures
    assert all((again / "figures" / name).stat().st_size > 1000 for name in figures)
    assert json.loads((again / "metrics.json").read_text()) == json.loads((original / "metrics.json").read_text())


def test_shared_folder_holds_what_tables_need_and_no_checkpoints_or_data(author):
    shared = author["project"] / SHARE_DIR
    files = {p.relative_to(shared).as_posix() for p in shared.rglob("*") if p.is_file()}
    manifest = json.loads((shared / MANIFEST).read_text())
    assert set(manifest["files"]) | {MANIFEST} == files
    assert not [f for f in files if f.endswith(".pt") or "preprocessed/" in f or "splits/" in f or f.startswith("llm/")]
    for run in author["runs"]:
        rel = run.relative_to(author["project"] / "results").as_posix()
        for name in ("run.json", "history.csv", "metrics.csv", "samples.npz"):
            assert f"{rel}/{name}" in files
        assert any(f.startswith(f"{rel}/predictions/") and f.endswith(".nii.gz") for f in files)
    first = author["runs"][0].relative_to(author["project"] / "results").as_posix()
    assert f"{first}/summary.json" in files  # optional file shared when present ...
    assert not any(f.endswith("summary.json") for f in files if not f.startswith(first))  # ... and not required
    # the class names the segmentation figures need travel with the results (no raw data)
    tasks = author["config"]["data"]["tasks"]
    assert sorted(f for f in files if f.startswith("datasets/")) == [f"datasets/{t}/dataset.json" for t in sorted(tasks)]
    assert {"config.yaml", "long.csv", "plots/curves.csv", "metrics.json", "tables/main.csv"} <= files
    assert (author["project"] / f"{SHARE_DIR}.dvc").is_file() and (author["project"] / SUMMARY_DIR / "metrics").is_dir()
    tracked = sh(["git", "ls-files"], author["project"]).stdout.split()
    assert f"{SHARE_DIR}.dvc" in tracked and not any(f.startswith(f"{SHARE_DIR}/") for f in tracked)


def test_a_reviewer_regenerates_everything_from_a_fresh_clone(author):
    reviewer = clone(author, "reviewer")
    assert not (reviewer / "results").exists() and not (reviewer / "data").exists()
    sh(["dvc", "pull", f"{SHARE_DIR}.dvc"], reviewer)
    done = sh(["mvl", "regenerate"], reviewer)  # how long it takes is BENCHMARKS.md's business, not a test's
    assert "every table equals the shared original" in done.stdout
    check_regenerated(author, reviewer)
    report = reviewer / REVIEWER_DIR / "report.html"
    assert report.stat().st_size > 100_000 and "main_comparison.html" in report.read_text(errors="replace")
    # no raw data, no training, nothing preprocessed, no checkpoint
    assert not (reviewer / "data").exists() and not (reviewer / "results/preprocessed").exists()
    assert not list((reviewer / "results").rglob("checkpoint*.pt"))
    # everything regenerated lies in the reviewer's folder, which the pipeline's runs never read
    assert [p.name for p in (reviewer / "results").iterdir()] == [REVIEWER_DIR.name]


def test_regenerate_refuses_a_changed_shared_file(author, tmp_path):
    reviewer = clone(author, "tampered")
    sh(["dvc", "pull", f"{SHARE_DIR}.dvc"], reviewer)
    long = reviewer / SHARE_DIR / "long.csv"
    long.chmod(0o644)
    long.write_text(long.read_text().replace("0.", "0.9", 1))
    done = sh(["mvl", "regenerate", "--no-report"], reviewer, ok=False)
    assert done.returncode == 2 and "long.csv" in done.stderr and "sha256" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and not (reviewer / REVIEWER_DIR).exists()


def test_a_reviewer_without_dvc_regenerates_from_an_archive(author):
    archive = author["root"] / "attached" / "results.tar.gz"
    sh(["mvl", "share", "--archive", str(archive)], author["project"])
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    assert archive.with_name("results.tar.gz.sha256").read_text() == f"{digest}  results.tar.gz\n"
    reviewer = clone(author, "from-archive")
    done = sh(["mvl", "regenerate", "--archive", str(archive)], reviewer)
    assert "every table equals the shared original" in done.stdout
    check_regenerated(author, reviewer)
    assert (reviewer / REVIEWER_DIR / "report.html").stat().st_size > 100_000


def test_a_damaged_archive_is_refused_in_one_line(author, tmp_path):
    archive = author["root"] / "attached" / "results.tar.gz"
    if not archive.is_file():
        sh(["mvl", "share", "--archive", str(archive)], author["project"])
    damaged = tmp_path / "results.tar.gz"
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    shutil.copy2(archive.with_name("results.tar.gz.sha256"), tmp_path / "results.tar.gz.sha256")
    reviewer = tmp_path / "reviewer"
    reviewer.mkdir()
    done = sh(["mvl", "regenerate", "--archive", str(damaged), "--no-report"], reviewer, ok=False)
    assert done.returncode == 2 and "does not match" in done.stderr and str(damaged) in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (reviewer / SHARE_DIR).exists() and not (reviewer / "results").exists()


def test_an_unsafe_archive_is_refused_even_with_a_matching_checksum(tmp_path):
    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name, payload in ((f"{SHARE_DIR}/{MANIFEST}", b"{}"), (f"{SHARE_DIR}/../escaped.txt", b"x")):
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    done = sh(["mvl", "regenerate", "--archive", str(archive), "--sha256", digest, "--no-report"], tmp_path, ok=False)
    assert done.returncode == 2 and "refusing to extract" in done.stderr
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / SHARE_DIR).exists()


def test_share_refuses_results_with_a_missing_run_file(author, tmp_path):
    results = tmp_path / "results"
    shutil.copytree(author["project"] / "results", results, ignore=shutil.ignore_patterns("*.pt", "preprocessed"))
    assert shareable_files(results)
    history = sorted(results.rglob("history.csv"))[0]
    history.unlink()
    with pytest.raises(InputError, match="history.csv: missing"):
        shareable_files(results)


def test_share_refuses_a_bad_archive_name_before_touching_the_shared_folder(author):
    manifest = author["project"] / SHARE_DIR / MANIFEST
    before = manifest.stat().st_mtime_ns
    done = sh(["mvl", "share", "--archive", "results.zip"], author["project"], ok=False)
    assert done.returncode == 2 and "results.zip" in done.stderr and ".tar.gz" in done.stderr
    assert manifest.stat().st_mtime_ns == before


def test_regenerate_refuses_a_manifest_pointing_outside_the_shared_folder(tmp_path):
    shared = tmp_path / SHARE_DIR
    shared.mkdir()
    (tmp_path / "secret.txt").write_text("x")
    digest = hashlib.sha256(b"x").hexdigest()
    (shared / MANIFEST).write_text(json.dumps({"format": 1, "results_dir": "results", "files": {"../secret.txt": digest}}))
    done = sh(["mvl", "regenerate", "--no-report"], tmp_path, ok=False)
    assert done.returncode == 2 and "outside the shared folder" in done.stderr
    assert not (tmp_path / REVIEWER_DIR).exists()
