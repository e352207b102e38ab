# Data lineage with DVC: data.dvc pins the raw task folders, dvc.lock the split and preprocessed
# outputs (stages in dvc.yaml), params.yaml the settings they ran with. One local job, so no two
# DVC commands compete for DVC's repository lock. `mvl lineage` reads the data stages' settings
# from results/config/lineage.yaml (see config_part in common.smk).


rule record_lineage:
    input:
        data=expand(f"{DATA}/{{task}}", task=TASKS),
        stages=data_outputs(),
        config=config_file("lineage"),
    output:
        "params.yaml",
        f"{DATA}.dvc",
        "dvc.lock",
    log:
        "logs/record_lineage.log",
    params:
        data=lambda wildcards, output: output[1].removesuffix(".dvc"),
    conda:
        "../../envs/medvisionllama.yaml"
    shell:
        "mvl lineage --data {params.data:q} --config {input.config:q} > {log:q} 2>&1"
