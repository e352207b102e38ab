# Score a trained run on its task's test split, on the original image grid (mm for HD95).
# `mvl evaluate` reads its settings from results/config/evaluate.yaml (see config_part in common.smk).


rule evaluate_run:
    input:
        run=f"{RUN_DIR}/run.json",
        preprocessed=f"{RESULTS}/preprocessed/{{task}}/{{size}}",
        split=f"{RESULTS}/splits/{{task}}.json",
        data=f"{DATA}/{{task}}",
        llm_layer=run_llm_layer,
        config=config_file("evaluate"),
    output:
        metrics=f"{RUN_DIR}/metrics.csv",
        samples=f"{RUN_DIR}/samples.npz",
        summary=f"{RUN_DIR}/summary.json",
        predictions=directory(f"{RUN_DIR}/predictions"),
    log:
        "logs/evaluate_run/{task}/{model}/{attention}/{size}/{replicate}.log",
    benchmark:
        "benchmarks/logs/evaluate_run/{task}/{model}/{attention}/{size}/{replicate}.tsv"
    params:
        run_dir=lambda wildcards, input: os.path.dirname(input.run),
        fold=fold_option,
        device=runtime_param("device"),
    threads: config["training"]["threads"]
    resources:
        gpu=0 if config["training"]["device"] == "cpu" else 1,
        mem_mb=evaluate_mem_mb,
        runtime=evaluate_runtime,
        cpus_per_task=lambda wildcards, threads: threads,
    group:
        RUN_GROUP
    conda:
        "../../envs/medvisionllama.yaml"
    shell:
        "mvl evaluate --config {input.config:q} --run-dir {params.run_dir:q} --preprocessed {input.preprocessed:q}"
        " --split {input.split:q} {params.fold:q} --data-dir {input.data:q} --device {params.device:q}"
        " --threads {threads} --no-progress > {log:q} 2>&1"
