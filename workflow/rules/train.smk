# One run = task x model x attention x input size x seed. A GPU job on a cluster; resumes from
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
        " --seed {wildcards.seed:q} {params.llm_weights:q} --device {params.device:q} --num-workers {params.num_workers:q}"
        " --threads {threads} --no-progress > {log:q} 2>&1"
