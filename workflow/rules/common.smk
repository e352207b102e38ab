# Shared lookups: which runs exist, where their files go, and the parameters rules pass on.
import json
import os

from medvisionllama.errors import InputError
from medvisionllama.experiments import ATTENTIONS, all_runs, check_tasks

try:
    check_tasks(config)
    RUNS = all_runs(config)
except InputError as exc:
    raise WorkflowError(str(exc)) from None

DATA = config["data"]["dir"]
RESULTS = config["results_dir"]
TASKS = config["data"]["tasks"]
SIZES = config["preprocess"]["sizes"]
MODELS = sorted({run.model for run in RUNS})


wildcard_constraints:
    task="Task[0-9]{2}_[A-Za-z]+",
    size="[0-9]+x[0-9]+x[0-9]+|full",
    seed="[0-9]+",
    attention="|".join(ATTENTIONS),
    model="[A-Za-z0-9._-]+",


RUN_DIR = f"{RESULTS}/runs/{{task}}/{{model}}/{{attention}}/{{size}}/seed{{seed}}"


def data_outputs():
    """Every split and preprocessed folder: the outputs the DVC stages describe."""
    return expand(f"{RESULTS}/splits/{{task}}.json", task=TASKS) + expand(
        f"{RESULTS}/preprocessed/{{task}}/{{size}}", task=TASKS, size=SIZES
    )


def run_files(name):
    """One file of every run, e.g. run_files("metrics.csv")."""
    return [f"{RESULTS}/{run.path}/{name}" for run in RUNS]


def model_options(wildcards):
    """The `mvl train` options that define the network, from the config."""
    m = config["model"]
    opts = (
        f"--patch-size {m['patch_size']} --hidden-size {m['hidden_size']} "
        f"--num-layers {m['num_layers']} --num-heads {m['num_heads']} --dropout {m['dropout']}"
    )
    if m["llm_layer"] is not None:
        opts += f" --llm-layer {m['llm_layer']}"
    name = wildcards.model.removesuffix("-random")
    weights = config["llm_weights"].get(name)
    if weights:
        opts += f" --llm-weights {weights}"
    return opts


def final_outputs(wildcards):
    targets = data_outputs() + paper_outputs()
    if config["lineage"]["dvc"]:
        targets.append("dvc.lock")
    return targets
