# One run = task x model x attention x input size x seed. A GPU job on a cluster; resumes from
# its run folder's checkpoint_last.pt when restarted (which is therefore not a declared output:
# Snakemake deletes declared outputs before it re-runs a job).


rule train_run:
    input:
        preprocessed=f"{RESULTS}/preprocessed/{{task}}/{{size}}",
        split=f"{RESULTS}/splits/{{task}}.json",
        llm_layer=run_llm_layer,
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
        model=model_options,
        epochs=config["training"]["epochs"],
        batch_size=config["training"]["batch_size"],
        lr=config["training"]["lr"],
        augment=config["training"]["augment"],
        device=config["training"]["device"],
        num_workers=config["training"]["num_workers"],
    threads: config["training"]["threads"]
    resources:
        gpu=0 if config["training"]["device"] == "cpu" else 1,
        mem_mb=16000,
        runtime=720,
        cpus_per_task=lambda wildcards, threads: threads,
    conda:
        "../../envs/medvisionllama.yaml"
    shell:
        "mvl train --preprocessed {input.preprocessed} --split {input.split} --run-dir {params.run_dir}"
        " --model {wildcards.model} --attention {wildcards.attention} --seed {wildcards.seed}"
        " --epochs {params.epochs} --batch-size {params.batch_size} --lr {params.lr}"
        " --augment {params.augment} {params.model} --device {params.device}"
        " --num-workers {params.num_workers} --threads {threads} --no-progress > {log} 2>&1"
