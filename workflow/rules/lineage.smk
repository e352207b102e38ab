# Data lineage with DVC: data.dvc pins the raw task folders, dvc.lock the split and preprocessed
# outputs (stages in dvc.yaml), params.yaml the settings they ran with. One local job, so no two
# DVC commands compete for DVC's repository lock.


rule record_lineage:
    input:
        data=expand(f"{DATA}/{{task}}", task=TASKS),
        stages=data_outputs(),
    output:
        "params.yaml",
        f"{DATA}.dvc",
        "dvc.lock",
    log:
        "logs/record_lineage.log",
    params:
        data=lambda wildcards, output: output[1].removesuffix(".dvc"),
        values=json.dumps({key: config[key] for key in ("results_dir", "data", "split", "preprocess")}),
    conda:
        "../../envs/medvisionllama.yaml"
    shell:
        "mvl lineage --data {params.data} --params {params.values:q} > {log} 2>&1"
