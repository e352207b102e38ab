"""The real Snakemake DAG, end to end, on a tiny configuration (the slowest test of the suite)."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import env_with_venv, tiny_config

from medvisionllama.experiments import all_runs

pytestmark = pytest.mark.slow


def run(command: list[str], cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=cwd, env=env_with_venv(), capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    return result


def digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.md5(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != ".snakemake_timestamp"
    }


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> tuple[Path, dict]:
    """The project, copied, after `snakemake --cores 2` on the tiny config."""
    from conftest import copy_project

    project = copy_project(tmp_path_factory.mktemp("e2e") / "project")
    config = tiny_config()
    (project / "config.yaml").write_text(yaml.safe_dump(config))
    run(["snakemake", "--cores", "2"], project)
    return project, config


def test_every_run_is_trained_and_scored(finished):
    project, config = finished
    from snakemake.utils import validate

    validate(config, str(project / "workflow/schemas/config.schema.yaml"))
    for r in all_runs(config):
        folder = project / "results" / "runs" / r.path()
        history = pd.read_csv(folder / "history.csv")
        assert len(history) == config["training"]["epochs"]
        metrics = pd.read_csv(folder / "metrics.csv")
        assert {"dice", "jaccard", "precision", "recall", "accuracy", "hd95"} <= set(metrics.columns)
        assert metrics["dice"].notna().any()


def test_every_table_and_figure_is_made_and_the_report_builds(finished):
    project, config = finished
    tables = project / "results" / "tables"
    for name in config["experiments"]:
        for part in ("", "_comparison", "_claims"):
            html = tables / f"{name}{part}.html"
            assert html.stat().st_size > 0, html
        assert "NOT the paper's configuration" in (tables / f"{name}.md").read_text()
    figures = sorted(p.name for p in (project / "results" / "figures").glob("*.png"))
    assert figures == sorted(
        f"{stem}.png"
        for stem in ("fig3_training_curves", "fig4_activation_maps", "fig5_segmentations", "appfig2_segmentations",
                     "appfig3_metrics", "appfig3_radar", "appfig1_attention_strategies", "published_vs_reproduced",
                     *(f"{name}_{kind}" for name in config["experiments"] for kind in ("forest", "cases", "curves")))
    )
    run(["snakemake", "--report", "report.html"], project)
    report = project / "report.html"
    assert report.stat().st_size > 100_000  # one self-contained file with the figures inside
    assert "what this report shows" in report.read_text(encoding="utf-8")  # the landing text (workflow.rst)


def test_dvc_metrics_and_plots_read_the_results(finished):
    project, _ = finished
    metrics = run(["dvc", "metrics", "show", "results/metrics.json"], project)  # dvc.yaml's: tests/test_dvc_views.py
    assert "dice" in metrics.stdout
    plots = run(["dvc", "plots", "show", "--json"], project)
    assert "curves.csv" in plots.stdout


def test_nothing_left_to_do_after_a_run(finished):
    project, _ = finished
    result = run(["snakemake", "-n", "--cores", "2"], project)
    assert "Nothing to be done" in result.stdout + result.stderr


def test_dvc_sees_the_data_stages_up_to_date_and_repro_reproduces_them(finished):
    project, config = finished
    assert (project / "data.dvc").exists() and (project / "dvc.lock").exists()
    status = run(["dvc", "status"], project)
    assert "up to date" in status.stdout, status.stdout
    splits = project / "results" / "splits"
    preprocessed = project / "results" / "preprocessed"
    before = digest(splits), digest(preprocessed)
    shutil.rmtree(splits)
    shutil.rmtree(preprocessed)
    run(["dvc", "repro", "--force"], project)
    assert (digest(splits), digest(preprocessed)) == before
    assert "up to date" in run(["dvc", "status"], project).stdout
