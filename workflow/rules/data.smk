# Raw MSD task folders (synthesised here or downloaded), then per task a split and per task and
# input size a preprocessed copy. dvc.yaml runs the same commands on the same paths.

if config["data"]["source"] == "synthetic":

    rule synthesize_task:
        localrule: True
        output:
            directory(f"{DATA}/{{task}}"),
        log:
            "logs/synthesize_task/{task}.log",
        params:
            cases=config["data"]["synthetic"]["cases"],
            seed=config["data"]["synthetic"]["seed"],
            max_dim=config["data"]["synthetic"]["max_dim"],
        conda:
            "../../envs/medvisionllama.yaml"
        shell:
            "mvl synthesize --task {wildcards.task:q} --output {output:q} --cases {params.cases:q}"
            " --seed {params.seed:q} --max-dim {params.max_dim:q} > {log:q} 2>&1"

else:

    rule download_task:
        localrule: True  # compute nodes often have no internet
        output:
            directory(f"{DATA}/{{task}}"),
        log:
            "logs/download_task/{task}.log",
        params:
            data_dir=lambda wildcards, output: os.path.dirname(output[0]),
        resources:
            runtime=240,
        conda:
            "../../envs/medvisionllama.yaml"
        shell:
            "mvl download --task {wildcards.task:q} --data-dir {params.data_dir:q} > {log:q} 2>&1"


rule split_task:
    input:
        f"{DATA}/{{task}}",
    output:
        f"{RESULTS}/splits/{{task}}.json",
    log:
        "logs/split_task/{task}.log",
    params:
        seed=config["split"]["seed"],
        fractions=[str(f) for f in config["split"]["fractions"]],
    conda:
        "../../envs/medvisionllama.yaml"
    shell:
        "mvl split --task-dir {input:q} --output {output:q} --seed {params.seed:q}"
        " --fractions {params.fractions:q} > {log:q} 2>&1"


rule preprocess_task:
    input:
        f"{DATA}/{{task}}",
    output:
        directory(f"{RESULTS}/preprocessed/{{task}}/{{size}}"),
    log:
        "logs/preprocess_task/{task}/{size}.log",
    benchmark:
        "benchmarks/logs/preprocess_task/{task}/{size}.tsv"
    params:
        workers=config["preprocess"]["workers"],
    threads: config["preprocess"]["workers"]
    conda:
        "../../envs/medvisionllama.yaml"
    shell:
        "mvl preprocess --task-dir {input:q} --size {wildcards.size:q} --output {output:q}"
        " --workers {params.workers:q} > {log:q} 2>&1"
