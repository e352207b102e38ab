# One run = task x model x attention x input size x seed. A GPU job on a cluster; resumes from
# its run folder's checkpoint_last.pt when restarted (which is therefore not a declared output:
# Snakemake deletes declared outputs before it re-runs a job).
#
# Settings travel as a file: `mvl train` reads the model and training sections of the resolved
# config. That file is rewritten whenever ANY config key changes, so it is an ancient() input: it
# orders the jobs (resolve_config first) without its mtime retraining every run. What does
# retrain a run is params.settings, the sections it uses (Snakemake's params-change trigger).


rule train_run:
    input:
        preprocessed=f"{RESULTS}/preprocessed/{{task}}/{{size}}",
        split=f"{RESULTS}/splits/{{task}}.json",
        llm_layer=run_llm_layer,
        config=ancient(f"{RESULTS}/config.yaml"),
    output:
        run=f"{RUN_DIR}/run.json",
        history=report(
            f"{RUN_DIR}/history.csv",
            category="Training curves",
            caption="../report/history.rst",
            labels={"task": "{task}", "model": "{model}", "attention": "{attention}", "size": "{size}", "seed": "{seed}"},
        ),
    log:
        "logs/train_run/{task}/{model}/{attention}/{size}/seed{seed}.log",
    benchmark:
        "benchmarks/logs/train_run/{task}/{model}/{attention}/{size}/seed{seed}.tsv"
    params:
        run_dir=lambda wildcards, output: os.path.dirname(output.run),
        llm_weights=llm_weights_option,
        settings=run_settings,
    threads: config["training"]["threads"]
    resources:
        gpu=0 if config["training"]["device"] == "cpu" else 1,
        mem_mb=16000,
        runtime=720,
        cpus_per_task=lambda wildcards, threads: threads,
    conda:
        "../../envs/medvisionllama.yaml"
    shell:
        "mvl train --config {input.config} --preprocessed {input.preprocessed} --split {input.split}"
        " --run-dir {params.run_dir} --model {wildcards.model} --attention {wildcards.attention}"
        " --seed {wildcards.seed} {params.llm_weights} --threads {threads} --no-progress > {log} 2>&1"
