"""Layer sweeps: llm_layers expands the LLM models per layer (baselines once, the default layer keeps
its name), the rules extract one layer file per layer, and the layer table and figure say which
layer each column used, with intervals that match a hand computation."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import ROOT, env_with_venv
from scipy import stats
from test_paper_fixtures import grid, make_long

from medvisionllama.errors import InputError
from medvisionllama.experiments import all_runs, expand_layers, experiment_specs
from medvisionllama.paper.outputs import figure_outputs, layer_sweep
from medvisionllama.paper.summary import score_experiment

SMOL_LAYERS = 30  # SmolLM2-135M: 30 decoder layers, the default is the last (29)


def sweep_config(layers=(0, 15, -1), models=("vit", "smollm2-135m"), llm_layer=None) -> dict:
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    config["model"]["llm_layer"] = llm_layer
    config["experiments"]["main"]["models"] = list(models)
    config["experiments"]["main"]["llm_layers"] = list(layers)
    return config


def test_llm_layers_expand_llm_models_only_and_the_default_layer_keeps_its_name():
    assert expand_layers(["vit", "mlp", "smollm2-135m", "smollm2-135m-shuffled"], [0, 15, -1]) == (
        "vit", "mlp", "smollm2-135m@0", "smollm2-135m@15", "smollm2-135m",
        "smollm2-135m-shuffled@0", "smollm2-135m-shuffled@15", "smollm2-135m-shuffled")
    # model.llm_layer moves the default: layer 15 is then the name without @, the last layer is @29
    assert expand_layers(["smollm2-135m"], [0, 15, -1], default_layer=15) == (
        "smollm2-135m@0", "smollm2-135m", "smollm2-135m@29")
    # -1 and 29 are the same layer: one model; a name written with @ takes the canonical form
    assert expand_layers(["smollm2-135m"], [29, -1]) == ("smollm2-135m",)
    assert expand_layers(["smollm2-135m@29", "smollm2-135m@3"], []) == ("smollm2-135m", "smollm2-135m@3")
    assert expand_layers(["vit", "smollm2-135m"], []) == ("vit", "smollm2-135m")  # no sweep: as written
    used: dict = {}
    expand_layers(["vit", "smollm2-135m"], [0, -1], used=used)
    assert used == {"smollm2-135m@0": (0, SMOL_LAYERS), "smollm2-135m": (29, SMOL_LAYERS)}
    for bad in (30, -31):
        with pytest.raises(InputError, match=r"out of range for smollm2-135m \(30 layers"):
            expand_layers(["smollm2-135m"], [bad])


def test_a_sweep_trains_each_baseline_once_and_keeps_the_default_runs():
    plain = yaml.safe_load((ROOT / "config.yaml").read_text())
    config = sweep_config()
    spec = next(s for s in experiment_specs(config) if s.name == "main")
    assert spec.models == ("vit", "smollm2-135m@0", "smollm2-135m@15", "smollm2-135m")
    assert spec.llm_layers == (0, 15, -1) and spec.model_layers["smollm2-135m@15"] == (15, SMOL_LAYERS)
    runs, before = all_runs(config), all_runs(plain)
    assert set(before) <= set(runs)  # every run of the default config, same key, same path
    added = set(runs) - set(before)
    assert {r.model for r in added} == {"smollm2-135m@0", "smollm2-135m@15"}
    assert len([r for r in runs if r.model == "vit" and r.size == "32x32x16" and r.attention == "hybrid-sequential"]) == 10
    with pytest.raises(InputError, match="llm_layers takes integers"):
        experiment_specs(sweep_config(layers=["last"]))


def test_dry_run_of_a_layer_sweep_extracts_one_layer_file_per_layer(tmp_path):
    overlay = tmp_path / "sweep.yaml"
    overlay.write_text(yaml.safe_dump({
        "results_dir": str(tmp_path / "results"), "lineage": {"dvc": False},
        "experiments": {"main": {"tasks": ["Task02_Heart"], "models": ["vit", "smollm2-135m", "smollm2-135m-random"],
                                 "llm_layers": [0, -1]},
                        **{k: None for k in ("llm_comparison", "capacity", "attention_strategy", "input_size",
                                             "complexity")}}}))
    result = subprocess.run(["snakemake", "-n", "-p", "--configfile", str(overlay)], cwd=ROOT, env=env_with_venv(),
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lines = result.stdout.splitlines()
    extracts = sorted(line.strip() for line in lines if "mvl extract-layer" in line)
    assert len(extracts) == 2
    assert re.search(r"--llm smollm2-135m --output \S+/llm/smollm2-135m@0\.safetensors --layer 0\b", extracts[0] + extracts[1])
    assert any(re.search(r"/llm/smollm2-135m\.safetensors(?! --layer)", e) for e in extracts)
    trains = [line for line in lines if "mvl train" in line]
    models = {re.search(r"--model (\S+)", line).group(1) for line in trains}
    assert models == {"vit", "smollm2-135m", "smollm2-135m@0", "smollm2-135m-random", "smollm2-135m-random@0"}
    at0 = next(line for line in trains if "--model smollm2-135m@0 " in line)
    assert "/runs/Task02_Heart/smollm2-135m@0/" in at0 and "--llm-weights" in at0 and "smollm2-135m@0.safetensors" in at0
    assert not any("--llm-weights" in line for line in trains if "-random" in line)  # no layer file read
    outputs = set(re.findall(r"(?:output): (.+)", result.stdout))
    names = {Path(p.strip()).name for line in outputs for p in line.split(",")}
    assert {"main_layers.csv", "main_layers.md", "layer_sweep.png", "layer_sweep.pdf"} <= names


def test_model_config_takes_the_layer_from_the_name():
    from medvisionllama.models.config import ModelConfig

    assert ModelConfig(model="smollm2-135m@3").block_layer == 3
    assert ModelConfig(model="smollm2-135m", llm_layer=5).block_layer == 5
    assert ModelConfig(model="smollm2-135m@3", llm_layer=5).block_layer == 3  # the run's name wins
    with pytest.raises(InputError, match="out of range"):
        ModelConfig(model="smollm2-135m@30")


def test_layer_table_names_each_layer_and_its_intervals_match_a_t_interval(tmp_path):
    config = sweep_config(layers=(0, -1))
    config["data"]["tasks"] = ["Task02_Heart", "Task05_Prostate"]
    config["experiments"] = {"main": config["experiments"]["main"]}
    spec = next(s for s in experiment_specs(config) if s.name == "main")
    runs = grid(list(spec.tasks), list(spec.models), n_cases=8, gain=0.1)
    for key in list(runs):  # plant a depth effect: layer 0 is exactly 0.05 worse than the last layer
        if key[1] == "smollm2-135m@0":
            last = runs[(key[0], "smollm2-135m", *key[2:])]
            runs[key] = {c: v - 0.05 for c, v in last.items()}
    scored = score_experiment(make_long(runs), spec)
    rows = layer_sweep.layer_rows(scored)
    heart = rows[(rows["task"] == "Task02_Heart") & (rows["model"] == "smollm2-135m@0")].iloc[0]
    values = np.array(list(runs[("Task02_Heart", "smollm2-135m@0", "hybrid-sequential", "32x32x16", 0)].values()))
    low, high = stats.t.interval(0.95, len(values) - 1, loc=values.mean(), scale=stats.sem(values))
    assert (heart["layer"], heart["num_layers"], heart["n"], heart["unit"]) == (0, SMOL_LAYERS, 8, "cases")
    assert heart["dice"] == pytest.approx(values.mean()) and (heart["ci_low"], heart["ci_high"]) == pytest.approx((low, high))
    overall = rows[rows["task"] == layer_sweep.ALL_TASKS].set_index("model")
    assert overall.loc["smollm2-135m", "dice"] - overall.loc["smollm2-135m@0", "dice"] == pytest.approx(0.05, abs=1e-9)
    assert overall.loc["smollm2-135m", "depth"] == 1.0 and overall.loc["smollm2-135m@0", "depth"] == 0.0
    assert np.isnan(overall.loc["vit", "depth"]) and overall.loc["vit", "n"] == 2
    wide = layer_sweep._clipped(*layer_sweep.t_interval(np.array([0.1, 0.9])))  # n = 2: t reaches past [0, 1]
    assert wide == (pytest.approx(0.5), 0.0, 1.0)
    table = layer_sweep.pivot(rows)
    assert list(table.columns) == ["ViT", "ViT + SmolLM2-135M, layer 0 of 30", "ViT + SmolLM2-135M, layer 29 of 30"]
    assert list(table.index) == ["Task02", "Task05", "all tasks"]
    paths = layer_sweep.write_layer_table(scored, tmp_path, ["NOT the paper's configuration"])
    assert [p.name for p in paths] == layer_sweep.files("main")
    assert "layer 0 of 30" in (tmp_path / "main_layers.md").read_text()
    assert "Beyond the paper" in (tmp_path / "main_layers.md").read_text()
    assert figure_outputs([spec])[-2:] == ["layer_sweep.png", "layer_sweep.pdf"]
    assert "layer_sweep.png" not in figure_outputs(experiment_specs(yaml.safe_load((ROOT / "config.yaml").read_text())))
    from medvisionllama.paper.figures.layers import write_layer_sweep_figure

    drawn = write_layer_sweep_figure([scored], tmp_path, "NOT the paper's configuration")
    assert sorted(p.name for p in drawn) == ["layer_sweep.pdf", "layer_sweep.png"] and all(p.stat().st_size for p in drawn)
