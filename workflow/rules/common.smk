# Shared lookups: which runs exist, where their files go, and the parameters rules pass on.
import json
import os
import re
from pathlib import Path

from medvisionllama.cluster.jobs import evaluate_resources, preprocess_resources, train_resources
from medvisionllama.errors import InputError
from medvisionllama.paper.outputs import figure_outputs, layer_sweep
from medvisionllama.paper.outputs.figures import figure_files as paper_figure_files, paper_item, report_category
from medvisionllama.experiments import experiment_specs, runs_of, sizes_needed
from medvisionllama.lineage import lineage_params
from medvisionllama.tasks import task_info
from medvisionllama.vocabulary import (
    ATTENTIONS, LAYER_MARK, REPLICATE_PATTERN, RUN_PATH, SIZE_PATTERN, parse_model_name, parse_replicate,
)

def task_problems(config):
    """A task of your own is a folder you bring (none is synthesised or downloaded): each line
    names a task of data.tasks that is neither an MSD task nor a folder under data.dir."""
    problems = []
    for task in config["data"]["tasks"]:
        if task_info(task).msd or os.path.isdir(os.path.join(config["data"]["dir"], task)):
            continue
        if config["data"]["source"] == "synthetic":
            problems.append(f"data.tasks: {task} is not one of the ten MSD tasks, the only ones synthesised; "
                            "put its folder in data.dir and set data.source: msd")
        else:
            problems.append(f"data.tasks: {task} is not an MSD task (nothing to download) and "
                            f"{os.path.join(config['data']['dir'], task)} does not exist")
    return problems


if task_problems(config):
    raise WorkflowError("config: " + "; ".join(task_problems(config)))

try:  # the schema has checked each value; this checks how the experiments fit together
    SPECS = experiment_specs(config)
    RUNS = runs_of(SPECS)
    SIZES_NEEDED = sizes_needed(config)  # {task: [size, ...]}: only what the runs read
except InputError as exc:
    raise WorkflowError(str(exc)) from None


def config_problems(config, runs):
    """What the schema cannot say: rules across fields, each as one line naming its key. Checked
    when Snakemake reads the config, before any job runs (or deletes an output to re-run it)."""
    problems = []
    fractions = config["split"]["fractions"]
    if not all(0 < f < 1 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        problems.append(f"split.fractions {fractions}: each must be in (0, 1) and they must sum to 1 "
                        f"(sum {sum(fractions):g})")
    model = config["model"]
    if model["hidden_size"] % model["num_heads"]:
        problems.append(f"model.hidden_size {model['hidden_size']} is not divisible by model.num_heads "
                        f"{model['num_heads']}")
    if not model["dropout"] < 1:
        problems.append(f"model.dropout {model['dropout']} must be below 1")
    patch = model["patch_size"]
    sizes = {run.size for run in runs}
    if "full" in sizes:
        sizes.discard("full")
        if not model.get("full_img_size"):
            problems.append("model.full_img_size must be set: a run uses the 'full' input size")
        else:
            sizes.add(model["full_img_size"])
    for size in sorted(sizes):
        if any(int(d) % patch for d in size.split("x")):
            key = "model.full_img_size" if size == model.get("full_img_size") else "input size"
            problems.append(f"{key} {size} is not divisible by model.patch_size {patch}")
    if config["lineage"]["dvc"]:  # dvc.yaml single-quotes these; a quote inside cannot be carried
        for key, value in (("results_dir", config["results_dir"]), ("data.dir", config["data"]["dir"])):
            if "'" in value:
                problems.append(f"{key} {value!r} holds a single quote, which dvc.yaml's commands cannot "
                                "carry: rename it or set lineage.dvc: false")
    return problems


if config_problems(config, RUNS):
    raise WorkflowError("config: " + "; ".join(config_problems(config, RUNS)))

if config["lineage"]["dvc"]:  # a hand-edited params.yaml (perhaps already run by `dvc repro`): stop before any job
    from medvisionllama.lineage import params_file_problem

    if problem := params_file_problem(lineage_params(config), Path("params.yaml")):
        raise WorkflowError(problem)

DATA = config["data"]["dir"]
RESULTS = config["results_dir"]
TASKS = config["data"]["tasks"]


wildcard_constraints:
    task="|".join(re.escape(t) for t in TASKS),  # the config's task folders (any names)
    size=SIZE_PATTERN,
    seed="[0-9]+",
    replicate=REPLICATE_PATTERN,
    llm=r"[A-Za-z0-9._-]+(@[0-9]+)?",
    attention="|".join(ATTENTIONS),
    model=r"[A-Za-z0-9._-]+(@[0-9]+)?",
    part="train|evaluate|lineage",


RUN_DIR = f"{RESULTS}/runs/{RUN_PATH}"


def data_outputs():
    """Every split (one per task of data.tasks) and every preprocessed folder an experiment reads
    (``sizes_needed``): the outputs the DVC stages describe."""
    return expand(f"{RESULTS}/splits/{{task}}.json", task=TASKS) + [
        f"{RESULTS}/preprocessed/{task}/{size}" for task, sizes in SIZES_NEEDED.items() for size in sizes
    ]


def tasks_to_download():
    """data.source msd: the tasks of data.tasks whose folder under data.dir does not exist. A folder
    that exists is the user's data, read in place (see data.smk); it must be complete (dataset.json
    and every file it lists), or the workflow stops here naming what it lacks."""
    from medvisionllama.data.download import missing_files

    absent = []
    for task in TASKS:
        folder = os.path.join(DATA, task)
        if not os.path.lexists(folder):
            absent.append(task)
            continue
        try:
            lacks = missing_files(Path(folder)) if os.path.isdir(folder) else ["(it is not a folder)"]
        except InputError as exc:
            raise WorkflowError(str(exc)) from None
        if lacks:
            raise WorkflowError(
                f"{folder}: exists but lacks {', '.join(lacks[:3])}{' ...' if len(lacks) > 3 else ''}; "
                f"complete it, or move it aside so the pipeline downloads {task}"
            )
    return absent


# An edit inside a task folder (a label fixed in place) does not change the folder's time, which
# is all Snakemake compares. Each time Snakemake reads the workflow, the content hashes of every
# existing task folder are refreshed into results/fingerprints/{task}.json, rewritten only when
# one changes (medvisionllama.data.fingerprint); the task's split and preprocessing read that
# file, so exactly the edited task re-runs. fingerprint_task (data.smk) makes it the first time,
# e.g. after synthesize_task or download_task; cluster jobs only read it.
def fingerprint_file(task):
    return f"{RESULTS}/fingerprints/{task}.json"


def refresh_fingerprints():
    from medvisionllama.data.fingerprint import update_fingerprint

    if workflow.remote_exec:
        return
    for task in TASKS:
        folder = os.path.join(DATA, task)
        if os.path.isdir(folder):
            try:
                update_fingerprint(folder, fingerprint_file(task))
            except (InputError, OSError) as exc:
                raise WorkflowError(f"fingerprint of {folder}: {exc}") from None


refresh_fingerprints()


def run_files(name):
    """One file of every run, e.g. run_files("metrics.csv")."""
    return [f"{RESULTS}/runs/{run.path()}/{name}" for run in RUNS]


# Settings travel as files. results/config.yaml is the whole resolved config (tables and figures
# read it; it changes whenever any key does). The costly stages read a part of it instead, a file
# holding only the sections they use, rewritten only when those change (Snakemake's params
# trigger on the rule that writes it), so editing an unrelated key retrains nothing.
def config_part(part):
    """The sections of the resolved config that stage ``part`` reads."""
    if part == "train":  # a run's seeds are the runs themselves; the runtime settings below cannot change a result
        return {"model": config["model"], "llms": config["llms"],
                "training": {k: v for k, v in config["training"].items() if k not in ("seeds", *RUNTIME_KEYS)}}
    if part == "evaluate":
        return {"evaluation": config["evaluation"], "llms": config["llms"]}
    if part == "lineage":  # what params.yaml holds, the (task, size) pairs to preprocess included
        return lineage_params(config)
    raise WorkflowError(f"no config part {part!r}")


# Settings that cannot change a result (where it runs, how many threads and loader workers) are
# in no config part, so changing them re-runs nothing; the rules pass them as command-line options.
RUNTIME_KEYS = ("threads", "device", "num_workers")


def runtime_param(key):
    """A rule param holding ``training.<key>``, a setting that cannot change a result. Snakemake
    re-runs a job when a param changes, except params computed from the job's input, output, threads
    or resources (it records only the others); so this one is a function of ``threads`` (unused)."""
    return lambda wildcards, threads: config["training"][key]


def config_file(part):
    """The settings file of stage ``part`` (written by resolve_config_part)."""
    return f"{RESULTS}/config/{part}.yaml"


def llm_weights_option(wildcards):
    """`--llm-weights <layer file>` for the models that read one (pretrained and shuffled blocks),
    as a list of arguments (the rule quotes each one)."""
    return [arg for path in run_llm_layer(wildcards) for arg in ("--llm-weights", path)]


def layer_file(llm):
    """Where extract_llm_layer saves the decoder layer of ``llm`` (``<llm>`` at its default layer,
    ``<llm>@<layer>`` otherwise: ``vocabulary.ModelName.layer_llm``)."""
    return f"{RESULTS}/llm/{llm}.safetensors"


def run_seed(wildcards):
    """The seed of a run's ``{replicate}`` (``seed0`` or ``seed0-fold2``)."""
    return parse_replicate(wildcards.replicate)[0]


def fold_option(wildcards):
    """`--fold K` for a cross-validation run (replicate ``seed{s}-fold{K}``), else nothing."""
    fold = parse_replicate(wildcards.replicate)[1]
    return [] if fold is None else ["--fold", str(fold)]


def run_llm_layer(wildcards):
    """The layer file a run reads: none for vit, mlp and the random controls (see
    ``vocabulary.ModelName.layer_llm``)."""
    llm = parse_model_name(wildcards.model).layer_llm
    return [layer_file(llm)] if llm else []


def extract_llm(wildcards):
    """The registry name of a layer file's ``{llm}`` (``smollm2-135m@3`` -> ``smollm2-135m``)."""
    return wildcards.llm.split(LAYER_MARK, 1)[0]


def extract_options(wildcards):
    """`mvl extract-layer` options: the layer index (the ``@<layer>`` of ``{llm}``, else the
    config's model.llm_layer) and the weights' source, as a list of arguments (the rule quotes
    each one)."""
    opts = []
    llm, _, layer = wildcards.llm.partition(LAYER_MARK)
    if not layer and config["model"]["llm_layer"] is not None:
        layer = str(config["model"]["llm_layer"])
    if not layer:  # a folder LLM's own default layer (llms: {name: {layer: N}})
        layer = config["llms"].get(llm, {}).get("layer")
    if layer is not None and layer != "":
        opts += ["--layer", str(layer)]
    weights = config["llm_weights"].get(llm) or config["llms"].get(llm, {}).get("path")
    if weights:
        opts += ["--weights", str(weights)]
    return opts


TABLES = f"{RESULTS}/tables"
FIGURES = f"{RESULTS}/figures"


def table_files():
    """Every file `mvl tables` writes (the names each table object gives); the HTML forms go into
    the report, captioned by workflow/report/{table,comparison,claims}.rst."""
    files = []
    for spec in SPECS:
        contents = dict(spec.table.files(spec.name))
        if layer_sweep.wanted(spec):  # beyond the paper: Dice per LLM layer
            contents["layers"] = layer_sweep.files(spec.name)
        for content, names in contents.items():
            for name in names:
                path = f"{TABLES}/{name}"
                if name.endswith(".html"):
                    path = report(
                        path,
                        category=report_category(paper_item(spec.table.name)),
                        subcategory=spec.name,
                        caption=f"../report/{content}.rst",
                        labels={"experiment": spec.name, "kind": spec.kind, "content": content},
                    )
                files.append(path)
    return files


def figure_files():
    """Every file `mvl figures` writes; the PNGs go into the report in the paper's order
    (medvisionllama.paper.outputs.figures: figure_files, report_category)."""
    files = []
    for f in paper_figure_files(SPECS):
        path = f"{FIGURES}/{f.name}"
        if f.name.endswith(".png"):
            path = report(path, category=f.category, subcategory=f.subcategory,
                          caption=f"../report/{f.caption}.rst", labels=dict(f.labels))
        files.append(path)
    return files


def paper_outputs():
    """The tables and figures as plain paths, for the final target: report flags belong where
    the files are made, or the report attributes them to the target."""
    return [str(path) for path in table_files() + figure_files()] if SPECS else []


LINEAGE_RECORD = f"{RESULTS}/lineage.json"


SUMMARY = "shared-summary"  # the committed summary the DVC views read (rule summarise_results)


def final_outputs(wildcards):
    targets = data_outputs() + paper_outputs() + [f"{RESULTS}/metrics.json", SUMMARY]
    # every run's own outputs too: Snakemake skips a missing file whose consumers are up to date (as
    # if it were temporary), so a deleted metrics.csv or history.csv would go unnoticed otherwise
    targets += run_files("metrics.csv") + run_files("history.csv") + run_files("run.json")
    if config["lineage"]["dvc"]:  # the record of `mvl lineage`, never the committed files it writes
        targets.append(LINEAGE_RECORD)
    return targets


# On a cluster, a run's train_run and evaluate_run form one job group, i.e. one sbatch job (one
# queue wait, one GPU allocation): memory and GPUs the larger of the two, runtime their sum.
# Snakemake ignores groups when it runs jobs itself (no executor plugin).
RUN_GROUP = "run_{task}_{model}_{attention}_{size}_{replicate}"


# Cluster requests of a run's jobs, estimated from the run (input size, model, LLM width, epochs,
# cases; medvisionllama.cluster.resources) and grown with Snakemake's `attempt` up to the caps
# MVL_SLURM_MAX_MEM_MB / MVL_SLURM_MAX_RUNTIME (docs/slurm.md).
def train_mem_mb(wildcards, attempt):
    return train_resources(config, wildcards, attempt).mem_mb


def train_runtime(wildcards, attempt):
    return train_resources(config, wildcards, attempt).runtime_min


def evaluate_mem_mb(wildcards, attempt):
    return evaluate_resources(config, wildcards, attempt).mem_mb


def evaluate_runtime(wildcards, attempt):
    return evaluate_resources(config, wildcards, attempt).runtime_min


def preprocess_mem_mb(wildcards, attempt):
    return preprocess_resources(config, wildcards, attempt).mem_mb


def preprocess_runtime(wildcards, attempt):
    return preprocess_resources(config, wildcards, attempt).runtime_min
