# Data lineage with DVC: data.dvc pins the raw task folders, dvc.lock the split and preprocessed
# outputs (stages in dvc.yaml). Both run on the submitting machine, one at a time (DVC's lock).


rule track_raw_data:
    input:
        expand(f"{DATA}/{{task}}", task=TASKS),
    output:
        f"{DATA}.dvc",
    log:
        "logs/track_raw_data.log",
    params:
        path=lambda wildcards, output: output[0].removesuffix(".dvc"),
    conda:
        "../../envs/medvisionllama.yaml"
    shell:
        "mvl lineage track --path {params.path} > {log} 2>&1"


rule record_lineage:
    input:
        f"{DATA}.dvc",
        data_outputs(),
    output:
        "dvc.lock",
        "params.yaml",
    log:
        "logs/record_lineage.log",
    params:
        values=json.dumps({key: config[key] for key in ("results_dir", "data", "split", "preprocess")}),
    conda:
        "../../envs/medvisionllama.yaml"
    shell:
        "mvl lineage commit --params {params.values:q} > {log} 2>&1"
