"""What `dvc metrics show/diff`, `dvc params diff` and `dvc plots show/diff` print for shared
results, and what `mvl share` promises about its own outputs.

A small git + DVC repository with the project's dvc.yaml and plot template, hand-made runs (no
training), `mvl aggregate`, then `mvl share --no-push`; each DVC command's output is read. The
DVC views read only the committed shared-summary/, which the pipeline's last rule writes too.
"""

from __future__ import annotations

import json
import os
import re
import tarfile
import shutil
import subprocess
import tempfile
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import ROOT, env_with_venv
from test_paper_fixtures import grid, make_long, write_run_dir

from medvisionllama.experiments import load_experiments
from medvisionllama.paper.aggregate import aggregate
from medvisionllama.paper.metrics_json import HEADLINE_KEYS, headline_metrics
from medvisionllama.paper.summary import score_experiment
from medvisionllama import cli
from medvisionllama.errors import InputError
from medvisionllama.share import SHARE_DIR, SUMMARY_DIR, offline_html_template, render_dvc_plots, share

T1, T3 = "Task01_BrainTumour", "Task03_Liver"
SIZE = "32x32x16"
EXPERIMENTS = {
    "main": {"tasks": [T1, T3], "models": ["vit", "smollm2-135m"], "sizes": [SIZE]},
    "capacity": {"tasks": [T1], "models": ["smollm2-135m", "vit"], "attention": ["hybrid-sequential", "spatial"],
                 "sizes": [SIZE]},
}


def sh(command: list[str], cwd: Path) -> str:
    done = subprocess.run(command, cwd=cwd, env=env_with_venv(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{' '.join(command)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def write_results(repo: Path, lr: float, vit_bump: float = 0.0, epochs: int = 4) -> None:
    """Runs of EXPERIMENTS under repo/results (hand-made), aggregated, with a resolved config."""
    results = repo / "results"
    shutil.rmtree(results, ignore_errors=True)
    runs = grid([T1, T3], ["vit", "smollm2-135m"], sizes=(SIZE,), n_cases=4)
    runs.update(grid([T1], ["vit", "smollm2-135m"], attention=("spatial",), sizes=(SIZE,), n_cases=4))
    for (task, model, attention, size, seed), cases in runs.items():
        if model == "vit":
            cases = {c: v + vit_bump for c, v in cases.items()}
        write_run_dir(results / "runs", task, model, attention, size, seed, cases, epochs=epochs)
    aggregate([results / "runs"], results / "long.csv", results / "plots" / "curves.csv")
    config = {"results_dir": "results", "data": {"source": "synthetic"},
              "training": {"batch_size": 4, "lr": lr, "epochs": 4}, "model": {"hidden_size": 32},
              "experiments": EXPERIMENTS}
    (results / "config.yaml").write_text(yaml.safe_dump(config))


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git + DVC repository with the project's dvc.yaml and plot template, shared once, committed."""
    repo = tmp_path / "repo"
    repo.mkdir()
    for rel in ("dvc.yaml", "params.yaml", ".gitignore", ".dvcignore"):
        shutil.copy2(ROOT / rel, repo / rel)
    sh(["git", "init", "-q"], repo)
    sh(["dvc", "init", "-q"], repo)
    sh(["dvc", "config", "core.analytics", "false"], repo)
    shutil.copytree(ROOT / ".dvc" / "plots", repo / ".dvc" / "plots")
    write_results(repo, lr=3e-3)
    share(results=Path("results"), push=False, repo=repo)
    sh(["git", "add", "-A"], repo)
    sh(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "first results"], repo)
    return repo


def test_headline_metrics_average_the_per_task_means():
    long = make_long(grid([T1, T3], ["vit", "smollm2-135m"], n_cases=5))
    spec = load_experiments_from({"main": {"tasks": [T1, T3], "models": ["vit", "smollm2-135m"], "sizes": [SIZE]}})[0]
    scored = score_experiment(long, spec)
    head = headline_metrics([scored])
    assert sorted(head) == ["main/smollm2-135m.json", "main/vit.json"]
    means = long[long["class_name"] == "mean"].groupby(["model", "task"])[["dice", "hd95"]].mean()
    for model in ("vit", "smollm2-135m"):
        entry = head[f"main/{model}.json"]
        assert tuple(sorted(entry)) == tuple(sorted(HEADLINE_KEYS))
        assert entry["dice"] == pytest.approx(means.loc[model]["dice"].mean(), abs=1e-6)
        assert entry["hd95"] == pytest.approx(means.loc[model]["hd95"].mean(), abs=1e-6)
        assert (entry["n_cases"], entry["n_tasks"], entry["n_seeds"]) == (10, 2, 1)
    assert head["main/smollm2-135m.json"]["dice"] > head["main/vit.json"]["dice"]


def load_experiments_from(experiments: dict):
    """The specs of a config holding only ``experiments``."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "config.yaml"
        path.write_text(yaml.safe_dump({"experiments": experiments}))
        return load_experiments(path, None)


def test_metrics_show_is_one_short_row_per_experiment_and_group(repo):
    out = sh(["dvc", "metrics", "show"], repo)
    lines = [line.split() for line in out.strip().splitlines()]
    assert lines[0] == ["Path", *sorted(HEADLINE_KEYS)]
    rows = {cells[0]: cells[1:] for cells in lines[1:]}
    assert sorted(rows) == sorted(f"shared-summary/metrics/{name}" for name in (
        "main/vit.json", "main/smollm2-135m.json", "capacity/vit/hybrid-sequential.json",
        "capacity/smollm2-135m/hybrid-sequential.json",  # Table 3 runs spatial attention for the LLM only
        "capacity/smollm2-135m/spatial.json"))
    assert all(len(cells) == len(HEADLINE_KEYS) for cells in rows.values())
    written = json.loads((repo / "shared-summary/metrics/main/vit.json").read_text())
    dice_column = sorted(HEADLINE_KEYS).index("dice")
    assert float(rows["shared-summary/metrics/main/vit.json"][dice_column]) == pytest.approx(written["dice"], abs=1e-4)
    assert max(len(line) for line in out.splitlines()) < 200


def test_metrics_and_params_diff_between_commits(repo):
    before = json.loads((repo / "shared-summary/metrics/main/vit.json").read_text())
    write_results(repo, lr=1e-3, vit_bump=0.05)
    share(results=Path("results"), push=False, repo=repo)
    after = json.loads((repo / "shared-summary/metrics/main/vit.json").read_text())
    assert after["dice"] == pytest.approx(before["dice"] + 0.05, abs=1e-6)

    diff = sh(["dvc", "metrics", "diff", "--json"], repo)
    changes = json.loads(diff)
    vit = changes["shared-summary/metrics/main/vit.json"]["dice"]
    assert vit["old"] == pytest.approx(before["dice"]) and vit["new"] == pytest.approx(after["dice"])
    assert "shared-summary/metrics/main/smollm2-135m.json" not in changes  # unchanged runs: no line
    text = sh(["dvc", "metrics", "diff"], repo)
    assert "failed" not in text.lower() and re.search(r"main/vit\.json\s+dice\s+\S+\s+\S+\s+0\.05", text), text

    params = sh(["dvc", "params", "diff"], repo)
    line = next(ln for ln in params.splitlines() if "training.lr" in ln)
    assert "shared-summary/config.yaml" in line and "0.003" in line and "0.001" in line
    assert "experiments" not in params  # only what changed

    sh(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "second results"], repo)
    between = json.loads(sh(["dvc", "metrics", "diff", "HEAD~1", "HEAD", "--json"], repo))
    assert between["shared-summary/metrics/main/vit.json"]["dice"]["diff"] == pytest.approx(0.05, abs=1e-6)
    params_between = json.loads(sh(["dvc", "params", "diff", "HEAD~1", "HEAD", "--json"], repo))
    lr = params_between["shared-summary/config.yaml"]["training.lr"]
    assert (lr["old"], lr["new"]) == (pytest.approx(3e-3), pytest.approx(1e-3))


def test_plots_draw_one_line_per_run_grouped_by_model_one_panel_per_task(repo):
    shown = json.loads(sh(["dvc", "plots", "show", "--json"], repo))["data"]
    assert set(shown) == {"validation Dice per run", "training loss per run"}
    spec = shown["validation Dice per run"][0]["content"]
    encoding = spec["spec"]["encoding"]
    assert spec["facet"]["column"]["field"] == "task"
    assert encoding["color"]["field"] == "model" and encoding["detail"]["field"] == "run"
    assert encoding["y"]["field"] == "val_dice" and encoding["x"]["field"] == "epoch"
    values = pd.DataFrame(spec["data"]["values"])
    curves = pd.read_csv(repo / "results/plots/curves.csv")
    assert values["run"].nunique() == curves["run"].nunique() == 6
    assert len(values) == len(curves)  # every epoch of every run, none merged
    one = values[values["run"] == curves["run"].iloc[0]]
    assert one["val_dice"].astype(float).tolist() == pytest.approx(
        curves[curves["run"] == curves["run"].iloc[0]]["val_dice"].tolist())


def test_plots_render_offline(repo):
    template = offline_html_template()
    assert "{plot_divs}" in template and "<script src" not in template
    index = render_dvc_plots(repo / "dvc_plots", repo=repo)
    html = index.read_text()
    assert "cdn.jsdelivr" not in html and "<script src=" not in html  # nothing fetched from a network
    assert html.count("vegaEmbed(") >= 2  # both plots embedded
    assert "vega-lite" in html and len(html) > 1_000_000  # the libraries themselves are inside


def commit(repo: Path, message: str) -> None:
    sh(["git", "add", "-A"], repo)
    sh(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message], repo)


def test_plots_diff_between_commits_draws_both_commits_data(repo):
    """The plots read the committed summary's curves, so a diff of two commits has data on both
    sides (one more epoch per run in the second)."""
    write_results(repo, lr=3e-3, epochs=5)
    share(results=Path("results"), push=False, repo=repo)
    commit(repo, "five epochs")
    shown = json.loads(sh(["dvc", "plots", "diff", "HEAD~1", "HEAD", "--json"], repo))["data"]
    values = pd.DataFrame(shown["validation Dice per run"][0]["content"]["data"]["values"])
    per_rev = values.groupby("rev")["run"].count().to_dict()
    assert per_rev == {"HEAD~1": 6 * 4, "HEAD": 6 * 5}, per_rev
    assert sorted(values[values["rev"] == "HEAD"]["epoch"].astype(int).unique()) == [1, 2, 3, 4, 5]


def test_metrics_show_works_from_the_pipelines_summary_before_any_share(tmp_path, monkeypatch):
    """The pipeline's last rule writes shared-summary/ from results/ (`mvl share --summary-only`):
    no shared-results/ is needed for `dvc metrics show` or `dvc plots show`."""
    repo = tmp_path / "fresh"
    repo.mkdir()
    for rel in ("dvc.yaml", "params.yaml", ".gitignore", ".dvcignore"):
        shutil.copy2(ROOT / rel, repo / rel)
    sh(["git", "init", "-q"], repo)
    sh(["dvc", "init", "-q"], repo)
    shutil.copytree(ROOT / ".dvc" / "plots", repo / ".dvc" / "plots")
    write_results(repo, lr=3e-3)
    monkeypatch.chdir(repo)
    assert cli.main(["share", "--summary-only"]) == 0
    assert not (repo / SHARE_DIR).exists()
    shown = json.loads(sh(["dvc", "metrics", "show", "--json"], repo))
    metrics = next(iter(shown.values()))["data"]
    assert "shared-summary/metrics/main/vit.json" in metrics and not any("error" in v for v in metrics.values())
    plots = json.loads(sh(["dvc", "plots", "show", "--json"], repo))["data"]
    assert len(plots["training loss per run"][0]["content"]["data"]["values"]) == 6 * 4


def test_the_pipeline_ends_with_the_summary():
    # --forceall: the whole DAG is planned, also in a checkout where `make pipeline` already ran
    done = subprocess.run(["snakemake", "-n", "--forceall", "--quiet", "rules"], cwd=ROOT, env=env_with_venv(), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert re.search(r"^summarise_results\s+1$", done.stdout, re.MULTILINE), done.stdout


# ------------------------------------------------------------------------------------ sharing
def test_two_archives_of_the_same_results_are_byte_identical(repo, tmp_path):
    first = tmp_path / "a" / "results.tar.gz"
    share(results=Path("results"), archive=first, repo=repo)
    for path in (repo / "results").rglob("*"):  # other times and modes on the author's files
        os.utime(path, (1_000_000, 1_000_000))
    (repo / "results" / "long.csv").chmod(0o600)
    umask = os.umask(0o077)
    try:
        second = tmp_path / "b" / "results.tar.gz"
        share(results=Path("results"), archive=second, repo=repo)
    finally:
        os.umask(umask)
    assert first.read_bytes() == second.read_bytes()
    assert first.with_name("results.tar.gz.sha256").read_text() == second.with_name("results.tar.gz.sha256").read_text()
    header = first.read_bytes()[:64]
    assert header[4:8] == b"\0\0\0\0" and b"mvl-tmp" not in header  # gzip header: no time, no file name
    with tarfile.open(first) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names == sorted(names) and all(n.startswith(f"{SHARE_DIR}/") for n in names)
    assert {(m.mode, m.mtime, m.uid, m.gid, m.uname, m.gname, m.type) for m in members} == {
        (0o644, 0, 0, 0, "", "", tarfile.REGTYPE)}


def test_a_failed_or_refused_share_leaves_the_previous_shared_folder(repo, tmp_path):
    before = {p.relative_to(repo).as_posix(): p.read_bytes() for d in (SHARE_DIR, SUMMARY_DIR)
              for p in sorted((repo / d).rglob("*")) if p.is_file()}
    write_results(repo, lr=1e-3, vit_bump=0.05)  # new results, which must not replace the old share
    (tmp_path / "a-file").write_text("")
    with pytest.raises(OSError):  # the archive cannot be written: its folder is a file
        share(results=Path("results"), archive=tmp_path / "a-file" / "results.tar.gz", repo=repo)
    with pytest.raises(InputError, match="no DVC remote"):  # dvc push with no remote to push to
        share(results=Path("results"), repo=repo)
    sorted((repo / "results" / "runs").rglob("metrics.csv"))[0].unlink()
    with pytest.raises(InputError, match="metrics.csv: missing"):
        share(results=Path("results"), archive=tmp_path / "results.tar.gz", repo=repo)
    after = {p.relative_to(repo).as_posix(): p.read_bytes() for d in (SHARE_DIR, SUMMARY_DIR)
             for p in sorted((repo / d).rglob("*")) if p.is_file()}
    assert after == before
    assert not [p for p in repo.iterdir() if ".mvl-tmp-" in p.name]


def test_sharing_to_a_remote_needs_it_in_the_committed_dvc_config(repo, tmp_path, monkeypatch, capsys):
    sh(["dvc", "remote", "add", "--local", "-d", "mine", str(tmp_path / "private")], repo)
    with pytest.raises(InputError, match=r"\.dvc/config: has no remote 'mine'.*config\.local"):
        share(results=Path("results"), repo=repo)
    sh(["dvc", "remote", "add", "--project", "-d", "team", str(tmp_path / "remote")], repo)
    sh(["dvc", "remote", "default", "--local", "--unset"], repo)
    monkeypatch.chdir(repo)
    assert cli.main(["share"]) == 0
    out = capsys.readouterr().out
    assert "'team'" in out and "git add" in out and ".dvc/config" in out
    assert (tmp_path / "remote" / "files" / "md5").is_dir()  # pushed
