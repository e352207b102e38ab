# MedVisionLlama, the whole paper from one DAG. This file is a table of contents:
# the stages live in workflow/rules/, the work in the `mvl` command (src/medvisionllama).
from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config.yaml"


# the report's landing text: which configuration it shows, and whether its numbers are the paper's
report: "workflow/report/workflow.rst"


validate(config, schema="workflow/schemas/config.schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/lineage.smk"
include: "workflow/rules/llm.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/paper.smk"


# Cheap rules run where Snakemake runs (a cluster's login node); so do synthesize_task and
# download_task (marked in data.smk: only one of them exists) and extract_llm_layer (the hub).
# preprocess_task, train_run and evaluate_run go to the cluster.
localrules:
    all,
    extract_llm_layer,
    split_task,
    record_lineage,
    resolve_config,
    resolve_config_part,
    aggregate_metrics,
    make_tables,
    make_figures,


rule all:
    default_target: True
    input:
        final_outputs,


# The SLURM plugin (2.8.0) waits forever for a job sacct calls `CANCELLED by <uid>`, and a retry
# overwrites the failed attempt's log: the project carries fixes until a release has them
# (medvisionllama.cluster.plugin_patch; docs/slurm.md).
from medvisionllama.cluster.plugin_patch import patch_slurm_errors, patch_slurm_status

patch_slurm_status()
patch_slurm_errors()


# On a SLURM submission (not inside a job, not a dry run: Snakemake skips onstart then), check
# every job about to be submitted against the cluster's partitions before the first sbatch
# (`mvl preflight` without the submission; docs/slurm.md).
onstart:
    if not workflow.remote_exec:  # --cores lowering the config's threads is said, not silent
        from medvisionllama.cluster.preflight import capped_threads

        for line in capped_threads(config, workflow.resource_settings.cores,
                                   slurm=workflow.executor_plugin.name == "slurm"):
            print(line)
    # Jobs run here: they fork from one warm `mvl` that imported torch once (medvisionllama.warm;
    # README "Running faster"; MVL_WARM_WORKER=off runs every job in its own fresh process).
    if workflow.executor_plugin.name == "local" and not workflow.remote_exec and not any(
        method.name in {"CONDA", "APPTAINER"} for method in workflow.deployment_settings.deployment_method
    ):
        from medvisionllama.warm import start as start_warm_worker

        start_warm_worker(log="logs/warm-worker.log")
    if workflow.executor_plugin.name == "slurm" and not workflow.remote_exec:
        from medvisionllama.cluster.preflight import preflight_snakemake_jobs

        settings = workflow.resource_settings  # the lists a pasted fix must repeat
        try:
            print(preflight_snakemake_jobs(workflow.dag.needrun_jobs(), set_resources=settings.overwrite_resources,
                                           set_threads=settings.overwrite_threads))
        except InputError as exc:
            raise WorkflowError(str(exc)) from None
