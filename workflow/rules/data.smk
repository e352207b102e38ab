# Raw MSD task folders (synthesised here, downloaded, or already on disk), then per task a split
# and per task a preprocessed copy at each input size its runs read (SIZES_NEEDED in common.smk).
# dvc.yaml runs the same commands on the same paths.

from medvisionllama.data.download import mirror_url_option

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
    # data.source: msd. A task folder that already exists is the user's data (their copy of the
    # Decathlon, perhaps read-only on a shared file system): a plain input of the DAG, made by no
    # rule, so Snakemake never re-makes it, never deletes it before a job (it does that to a job's
    # outputs) and never sees "Params have changed" on it. Only absent task folders are outputs
    # of download_task (tasks_to_download in common.smk checks that existing ones are complete).
    DOWNLOAD = tasks_to_download()

    if DOWNLOAD:

        rule download_task:
            localrule: True  # compute nodes often have no internet
            output:
                directory(f"{DATA}/{{task}}"),
            log:
                "logs/download_task/{task}.log",
            wildcard_constraints:
                task="|".join(DOWNLOAD),
            params:
                data_dir=lambda wildcards, output: os.path.dirname(output[0]),
                url=lambda wildcards: mirror_url_option(config["data"].get("msd_mirror"), wildcards.task),
            resources:
                runtime=240,
            conda:
                "../../envs/medvisionllama.yaml"
            shell:
                "mvl download --task {wildcards.task:q} --data-dir {params.data_dir:q} {params.url:q}"
                " > {log:q} 2>&1"


# The content hashes of a task folder (see refresh_fingerprints in common.smk, which keeps them
# current each time Snakemake reads the workflow); this rule makes them the first time.
rule fingerprint_task:
    localrule: True
    input:
        f"{DATA}/{{task}}",
    output:
        f"{RESULTS}/fingerprints/{{task}}.json",
    log:
        "logs/fingerprint_task/{task}.log",
    conda:
        "../../envs/medvisionllama.yaml"
    shell:
        "mvl fingerprint --task-dir {input:q} --output {output:q} > {log:q} 2>&1"


rule split_task:
    input:
        data=f"{DATA}/{{task}}",
        fingerprint=f"{RESULTS}/fingerprints/{{task}}.json",  # what is in the folder (common.smk)
    output:
        f"{RESULTS}/splits/{{task}}.json",
    log:
        "logs/split_task/{task}.log",
    params:
        seed=config["split"]["seed"],
        fractions=[str(f) for f in config["split"]["fractions"]],
        folds=[] if config["split"].get("folds") is None else ["--folds", str(config["split"]["folds"])],
    conda:
        "../../envs/medvisionllama.yaml"
    shell:
        "mvl split --task-dir {input.data:q} --output {output:q} --seed {params.seed:q}"
        " --fractions {params.fractions:q} {params.folds:q} > {log:q} 2>&1"


rule preprocess_task:
    input:
        data=f"{DATA}/{{task}}",
        fingerprint=f"{RESULTS}/fingerprints/{{task}}.json",
    output:
        directory(f"{RESULTS}/preprocessed/{{task}}/{{size}}"),
    log:
        "logs/preprocess_task/{task}/{size}.log",
    benchmark:
        "benchmarks/logs/preprocess_task/{task}/{size}.tsv"
    threads: config["preprocess"]["workers"]  # speed only: not a param, so changing it re-runs nothing
    resources:  # estimated from the task's volumes and workers (medvisionllama.cluster.resources)
        mem_mb=preprocess_mem_mb,
        runtime=preprocess_runtime,
    conda:
        "../../envs/medvisionllama.yaml"
    shell:
        "mvl preprocess --task-dir {input.data:q} --size {wildcards.size:q} --output {output:q}"
        " --workers {threads} > {log:q} 2>&1"
