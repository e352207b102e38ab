# Data lineage with DVC: data.dvc pins the raw task folders, dvc.lock the split and preprocessed
# outputs (stages in dvc.yaml), params.yaml the settings they ran with. One local job, so no two
# DVC commands compete for DVC's repository lock. `mvl lineage` reads the settings from the
# resolved config: an ancient() input (it is rewritten on any config change), with the sections
# it uses as params (a change there reruns it).


rule record_lineage:
    input:
        data=expand(f"{DATA}/{{task}}", task=TASKS),
        stages=data_outputs(),
        config=ancient(f"{RESULTS}/config.yaml"),
    output:
        "params.yaml",
        f"{DATA}.dvc",
        "dvc.lock",
    log:
        "logs/record_lineage.log",
    params:
        data=lambda wildcards, output: output[1].removesuffix(".dvc"),
        sections=json.dumps({key: config[key] for key in LINEAGE_SECTIONS}, sort_keys=True),
    conda:
        "../../envs/medvisionllama.yaml"
    shell:
        "mvl lineage --data {params.data} --config {input.config} > {log} 2>&1"
