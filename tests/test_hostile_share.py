"""Shared results are untrusted input: `mvl regenerate` against hostile archives and folders.

A good shared folder is made once from hand-made runs (no training); the hostile variants are
built from it by tests/data/hostile/build.py (paths in the manifest, a planted rules file and
config, links, absolute and `..` members, a member whose header claims 10 GiB). Each is fed to
`mvl regenerate` in a fresh copy of the project, through an archive (`--archive`, with a matching
checksum: it proves nothing about who made it) and through the shared-results/ folder (the DVC
path). Afterwards the project's files and a victim folder beside it are byte-identical, nothing
was written outside results/reviewer/, and the planted code never ran.
"""

from __future__ import annotations

import errno
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml
from conftest import copy_project, env_with_venv, tiny_config
from test_paper_fixtures import grid, write_run_dir

from medvisionllama import cli, regenerate
from medvisionllama.paper.aggregate import aggregate
from medvisionllama.regenerate import REVIEWER_DIR
from medvisionllama.share import MANIFEST, SHARE_DIR, collect

_spec = importlib.util.spec_from_file_location("hostile", Path(__file__).parent / "data" / "hostile" / "build.py")
hostile = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(hostile)

from medvisionllama.tasks import get_task  # noqa: E402

TASKS = ["Task04_Hippocampus", "Task09_Spleen"]
SIZE = "16x16x8"


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    """A good shared folder (`mvl share`'s collect) of hand-made runs of one experiment."""
    root = tmp_path_factory.mktemp("good")
    results, data = root / "results", root / "data"
    for (task, model, attention, size, seed), cases in grid(TASKS, ["vit", "smollm2-135m"], sizes=(SIZE,)).items():
        write_run_dir(results / "runs", task, model, attention, size, seed, cases)
    aggregate([results / "runs"], results / "long.csv", results / "plots" / "curves.csv")
    for task in TASKS:
        (data / task).mkdir(parents=True)
        msd = get_task(task)  # an MSD-named folder must hold that task's labels and modalities
        (data / task / "dataset.json").write_text(json.dumps({"labels": msd.labels, "modality": msd.modality}))
    config = tiny_config()
    config["data"].update(tasks=TASKS, dir=str(data))
    config["preprocess"]["sizes"] = [SIZE]
    config["experiments"] = {"main": {"tasks": "all", "models": ["vit", "smollm2-135m"]}}
    (results / "config.yaml").write_text(yaml.safe_dump(config))
    shared = root / SHARE_DIR.name
    collect(results, shared)
    return shared


def snapshot(folder: Path, skip: tuple[str, ...] = ()) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.relative_to(folder).as_posix().startswith(skip)}


@pytest.fixture
def site(tmp_path: Path) -> dict:
    """A fresh project copy and a victim folder two levels up (the user's own files)."""
    project = copy_project(tmp_path / "home" / "project")
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "config.yaml").write_text("results_dir: my_results\n")
    (victim / "notes.txt").write_text("the user's notes\n")
    return {"project": project, "victim": victim, "tmp": tmp_path}


def freeze(site: dict) -> None:
    site["before"] = snapshot(site["project"], (f"{REVIEWER_DIR.as_posix()}/",))
    site["victim_before"] = snapshot(site["victim"])


def assert_untouched(site: dict) -> None:
    """Project files and the victim byte-identical; no planted code ran; results/ holds only the
    reviewer folder."""
    project = site["project"]
    assert snapshot(project, (f"{REVIEWER_DIR.as_posix()}/",)) == site["before"]
    assert snapshot(site["victim"]) == site["victim_before"]
    assert not list(site["tmp"].rglob(hostile.MARKER))
    if (project / "results").exists():
        assert sorted(p.name for p in (project / "results").iterdir()) in ([], [REVIEWER_DIR.name])


def mvl(site: dict, monkeypatch, capsys, *argv: str) -> tuple[int, str, str]:
    monkeypatch.chdir(site["project"])
    code = cli.main(["regenerate", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def assert_refused(code: int, err: str, *words: str) -> None:
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1, err
    for word in words:
        assert word in err, err


def assert_pinned(project: Path) -> None:
    """The reviewer's config is built, not copied: paths pinned, lineage off, no description."""
    config = yaml.safe_load((project / REVIEWER_DIR / "config.yaml").read_text())
    reviewer = (project / REVIEWER_DIR).resolve()
    assert config["results_dir"] == reviewer.as_posix()
    assert config["data"]["dir"] == f"{reviewer.as_posix()}/no-data" and not Path(config["data"]["dir"]).exists()
    assert config["lineage"]["dvc"] is False
    assert all(value is None for value in config["llm_weights"].values())
    assert all("description" not in e for e in config["experiments"].values())
    assert (project / REVIEWER_DIR / "tables" / "main.csv").is_file()


def manifest_path(site: dict, which: str) -> str:
    """A ``results_dir`` for the manifest: the project itself, or the victim (relative, absolute).
    Each regeneration costs seconds (figures), so each path tries one: the archive "dot", the
    shared folder "relative", the end-to-end test "absolute"."""
    victim = site["victim"]
    assert Path(os.path.normpath(site["project"] / "../../victim")) == victim
    return {"dot": ".", "relative": "../../victim", "absolute": str(victim)}[which]


# ------------------------------------------------------------------------------- archive path
@pytest.mark.slow  # runs DVC or the regenerate workflow end to end (the fast subset stays under 5 min)
def test_a_manifest_path_and_a_planted_config_go_nowhere_through_an_archive(good, site, monkeypatch, capsys):
    results_dir = manifest_path(site, "dot")
    folder = hostile.hostile_copy(good, site["tmp"] / "h" / SHARE_DIR.name, results_dir=results_dir, config=True)
    archive = hostile.archive_of(folder, site["tmp"] / "h.tar.gz")
    freeze(site)
    code, out, err = mvl(site, monkeypatch, capsys, "--archive", str(archive), "--no-report")
    assert code == 0, err
    assert_untouched(site)
    assert_pinned(site["project"])
    # the attacker's settings reached no file the pipeline reads (config.yaml, results/config/)
    assert not (site["project"] / "results" / "config").exists()
    assert (site["project"] / REVIEWER_DIR / SHARE_DIR.name / MANIFEST).is_file()  # the extracted copy


@pytest.mark.parametrize("kind", ["symlink", "hardlink", "absolute", "dotdot", "planted-rules", "outside-rules",
                                  "outside-config"])
def test_an_unsafe_member_is_refused_before_anything_is_written(good, site, kind, monkeypatch, capsys):
    unsafe = hostile.unsafe_members(site["victim"])
    unsafe["outside-rules"] = hostile.member("workflow/rules/common.smk", hostile.PLANTED_RULES.read_bytes())
    unsafe["outside-config"] = hostile.member("config.yaml", hostile.PLANTED_CONFIG.read_bytes())
    archive = hostile.archive_of(good, site["tmp"] / f"{kind}.tar.gz", extra=[unsafe[kind]])
    freeze(site)
    code, out, err = mvl(site, monkeypatch, capsys, "--archive", str(archive), "--no-report")
    assert_refused(code, err, "refusing to extract", repr(unsafe[kind][0].name))
    assert_untouched(site)
    assert not (site["project"] / REVIEWER_DIR).exists()


def test_a_huge_member_is_refused_from_its_header(good, site, monkeypatch, capsys):
    archive = hostile.huge_member_archive(good, site["tmp"] / "huge.tar.gz")
    assert archive.stat().st_size < 1 << 20  # the 10 GiB exist only in the header
    freeze(site)
    code, out, err = mvl(site, monkeypatch, capsys, "--archive", str(archive), "--no-report")
    assert_refused(code, err, "'shared-results/long.csv.bak'", str(hostile.HUGE), "cap")
    assert_untouched(site)
    assert not (site["project"] / REVIEWER_DIR).exists()


def test_an_archive_of_too_many_members_is_refused_from_its_headers(good, site, monkeypatch, capsys):
    archive = hostile.archive_of(good, site["tmp"] / "good.tar.gz")
    with tarfile.open(archive) as tar:
        members = len(tar.getmembers())
    freeze(site)
    code, _, err = mvl(site, monkeypatch, capsys, "--archive", str(archive), "--no-report", "--max-members", str(members - 1))
    assert_refused(code, err, str(archive), f"more than {members - 1} members", "--max-members")
    assert_untouched(site)
    assert not (site["project"] / REVIEWER_DIR).exists()


def test_an_archive_larger_than_the_free_space_is_refused_before_writing(good, site, monkeypatch, capsys):
    """Many files, each under the size cap, that together would fill the reviewer's disk."""
    archive = hostile.archive_of(good, site["tmp"] / "good.tar.gz")
    with tarfile.open(archive) as tar:
        total = sum(m.size for m in tar.getmembers() if m.isfile())
    real = shutil.disk_usage
    monkeypatch.setattr(regenerate.shutil, "disk_usage", lambda path: real(path)._replace(free=total - 1))
    written = []
    monkeypatch.setattr(regenerate.shutil, "copyfileobj", lambda *a, **k: written.append(a))
    freeze(site)
    code, _, err = mvl(site, monkeypatch, capsys, "--archive", str(archive), "--no-report")
    assert_refused(code, err, str(archive), "more than the", "MB free", "refusing to extract")
    assert not written
    assert_untouched(site)
    assert not (site["project"] / REVIEWER_DIR).exists()


@pytest.mark.slow  # runs DVC or the regenerate workflow end to end (the fast subset stays under 5 min)
def test_a_refused_archive_leaves_the_last_good_outputs(good, site, monkeypatch, capsys):
    """A good regeneration, then a refused archive: the reviewer folder and a pulled
    shared-results/ are as they were."""
    shutil.copytree(good, site["project"] / SHARE_DIR)
    archive = hostile.archive_of(good, site["tmp"] / "good.tar.gz")
    code, _, err = mvl(site, monkeypatch, capsys, "--archive", str(archive), "--no-report")
    assert code == 0, err
    before = snapshot(site["project"] / REVIEWER_DIR)
    freeze(site)
    bad = hostile.hostile_copy(good, site["tmp"] / "bad" / SHARE_DIR.name)
    (bad / "long.csv").write_text("task,model\n")  # no longer the sha256 its manifest lists
    code, _, err = mvl(site, monkeypatch, capsys, "--archive", str(hostile.archive_of(bad, site["tmp"] / "bad.tar.gz")),
                       "--no-report")
    assert_refused(code, err, "long.csv", "sha256")
    assert snapshot(site["project"] / REVIEWER_DIR) == before
    assert_untouched(site)


def test_a_full_disk_names_the_output_not_a_temporary_file(good, site, monkeypatch, capsys):
    archive = hostile.archive_of(good, site["tmp"] / "good.tar.gz")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")  # as a write through a file object fails

    monkeypatch.setattr(shutil, "copyfileobj", full)
    freeze(site)
    code, _, err = mvl(site, monkeypatch, capsys, "--archive", str(archive), "--no-report")
    assert_refused(code, err, f"{REVIEWER_DIR.as_posix()}/{SHARE_DIR.name}/", "No space left on device")
    assert ".mvl-tmp-" not in err
    assert_untouched(site)
    assert not (site["project"] / REVIEWER_DIR).exists()


# ------------------------------------------------------------------- shared-results/ (DVC path)
@pytest.mark.slow  # runs DVC or the regenerate workflow end to end (the fast subset stays under 5 min)
def test_a_manifest_path_and_a_planted_config_go_nowhere_from_the_shared_folder(good, site, monkeypatch, capsys):
    hostile.hostile_copy(good, site["project"] / SHARE_DIR, results_dir=manifest_path(site, "relative"), config=True)
    freeze(site)
    code, _, err = mvl(site, monkeypatch, capsys, "--no-report")
    assert code == 0, err
    assert_untouched(site)
    assert_pinned(site["project"])


@pytest.mark.parametrize("planted", ["workflow/rules/common.smk", "Snakefile", "runs/../config.yaml"])
def test_a_planted_file_listed_in_the_manifest_is_refused(good, site, planted, monkeypatch, capsys):
    shared = hostile.hostile_copy(good, site["tmp"] / "h" / SHARE_DIR.name)
    manifest = json.loads((shared / MANIFEST).read_text())
    manifest["files"][planted] = hostile.sha256(hostile.PLANTED_RULES.read_bytes())
    if ".." not in planted:
        (shared / planted).parent.mkdir(parents=True, exist_ok=True)
        (shared / planted).write_bytes(hostile.PLANTED_RULES.read_bytes())
    (shared / MANIFEST).write_text(json.dumps(manifest))
    shutil.move(shared, site["project"] / SHARE_DIR)
    freeze(site)
    code, _, err = mvl(site, monkeypatch, capsys, "--no-report")
    assert_refused(code, err, repr(planted))
    assert_untouched(site)
    assert not (site["project"] / REVIEWER_DIR).exists()


def test_a_symlink_out_of_the_shared_folder_is_refused(good, site, monkeypatch, capsys):
    shared = shutil.copytree(good, site["project"] / SHARE_DIR)
    target = site["victim"] / "long.csv"
    shutil.copyfile(shared / "long.csv", target)  # same bytes: the manifest's sha256 matches
    (shared / "long.csv").unlink()
    (shared / "long.csv").symlink_to(target)
    freeze(site)
    code, _, err = mvl(site, monkeypatch, capsys, "--no-report")
    assert_refused(code, err, "long.csv", "symbolic link")
    assert_untouched(site)


def test_a_shared_file_over_the_size_cap_is_refused(good, site, monkeypatch, capsys):
    shutil.copytree(good, site["project"] / SHARE_DIR)
    largest = max((p for p in (site["project"] / SHARE_DIR).rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    cap_mb = (largest.stat().st_size - 1) / (1 << 20)
    freeze(site)
    code, _, err = mvl(site, monkeypatch, capsys, "--no-report", "--max-file-mb", repr(cap_mb))
    assert_refused(code, err, largest.name, "cap")
    assert_untouched(site)


@pytest.mark.parametrize("field, value", [
    (("stand_ins", "smollm2-135m"), "llama\n\n.. include:: /etc/passwd"),
    (("experiments", "main", "models"), ["vit", "../../victim"]),
    (("experiments",), {"../../escape": {"models": ["vit"]}}),
    (("training", "exec"), "os.system('x')"),
])
def test_a_hostile_value_in_the_shared_config_is_refused(good, site, field, value, monkeypatch, capsys):
    config = yaml.safe_load((good / "config.yaml").read_text())
    node = config
    for key in field[:-1]:
        node = node[key]
    node[field[-1]] = value
    hostile.hostile_copy(good, site["project"] / SHARE_DIR, files={"config.yaml": yaml.safe_dump(config).encode()})
    freeze(site)
    code, _, err = mvl(site, monkeypatch, capsys, "--no-report")
    assert_refused(code, err, "config.yaml")
    assert_untouched(site)
    assert not (site["project"] / REVIEWER_DIR).exists()


@pytest.mark.slow
def test_the_report_runs_the_reviewers_own_workflow_on_the_built_config(good, site):
    """End to end with `snakemake --report`: a manifest pointing at the project, the attacker's
    config, and rules files lying in the shared folder (unlisted, so never read): the report is
    built into results/reviewer/, the planted code never runs, every project file is unchanged."""
    shared = hostile.hostile_copy(good, site["project"] / SHARE_DIR, results_dir=manifest_path(site, "absolute"),
                                  config=True)
    for rel in ("workflow/rules/common.smk", "Snakefile"):
        (shared / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(hostile.PLANTED_RULES, shared / rel)
    freeze(site)
    done = subprocess.run(["mvl", "regenerate"], cwd=site["project"], env=env_with_venv(), capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = site["project"] / REVIEWER_DIR / "report.html"
    assert report.stat().st_size > 100_000 and "main_comparison.html" in report.read_text(errors="replace")
    assert_untouched(site)
    assert_pinned(site["project"])


@pytest.mark.parametrize("name", ["config.yaml", "configs/paper.yaml"])
def test_the_projects_own_configs_pass_the_checks_on_a_shared_config(name):
    """No legitimate config is refused: the embedded default and the paper's grid."""
    from conftest import ROOT

    from medvisionllama.regenerate import reviewer_config

    config = reviewer_config(ROOT / name, ROOT)
    assert config["results_dir"] == (ROOT / REVIEWER_DIR).resolve().as_posix()
    assert config["experiments"] and config["lineage"]["dvc"] is False
