# One run = task x model x attention x input size x replicate (seed{s}, or seed{s}-fold{k} with
# split.folds: --fold k trains on that fold's cases). A GPU job on a cluster; resumes from
# its run folder's checkpoint_last.pt when restarted (which is therefore not a declared output:
# Snakemake deletes declared outputs before it re-runs a job).
# `mvl train` reads the model and training settings from results/config/train.yaml, which changes
# only when those sections do (see config_part in common.smk).


rule train_run:
    input:
        preprocessed=f"{RESULTS}/preprocessed/{{task}}/{{size}}",
        split=f"{RESULTS}/splits/{{task}}.json",
        llm_layer=run_llm_layer,
        config=config_file("train"),
    output:
        run=f"{RUN_DIR}/run.json",
        history=f"{RUN_DIR}/history.csv",  # drawn in the report as {experiment}_curves (paper.smk)
    log:
        "logs/train_run/{task}/{model}/{attention}/{size}/{replicate}.log",
    benchmark:
        "benchmarks/logs/train_run/{task}/{model}/{attention}/{size}/{replicate}.tsv"
    params:
        run_dir=lambda wildcards, output: os.path.dirname(output.run),
        llm_weights=llm_weights_option,
        seed=run_seed,
        fold=fold_option,
        device=runtime_param("device"),
        num_workers=runtime_param("num_workers"),
    threads: config["training"]["threads"]
    resources:
        gpu=0 if config["training"]["device"] == "cpu" else 1,
        mem_mb=train_mem_mb,
        runtime=train_runtime,
        cpus_per_task=lambda wildcards, threads: threads,
    group:
        RUN_GROUP
    conda:
        "../../envs/medvisionllama.yaml"
    shell:
        "mvl train --config {input.config:q} --preprocessed {input.preprocessed:q} --split {input.split:q}"
        " --run-dir {params.run_dir:q} --model {wildcards.model:q} --attention {wildcards.attention:q}"
        " --seed {params.seed:q} {params.fold:q} {params.llm_weights:q} --device {params.device:q}"
        " --num-workers {params.num_workers:q} --threads {threads} --no-progress > {log:q} 2>&1"
