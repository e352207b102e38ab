# Data lineage with DVC: dvc.lock records the split and preprocessed outputs (stages in dvc.yaml)
# and the raw task folders they read, params.yaml the settings they ran with; raw data inside the
# repository is also `dvc add`-ed (data.dvc). One local job, so no two DVC commands compete for
# DVC's repository lock. `mvl lineage` reads the data stages' settings from
# results/config/lineage.yaml (see config_part in common.smk).
#
# The job's only output is its record, lineage.json: params.yaml, dvc.lock and the .dvc file are
# committed files that `mvl lineage` rewrites in place (or, when it fails, puts back byte for
# byte), and Snakemake deletes the outputs of a failed job, so they are never declared here.


rule record_lineage:
    input:
        data=expand(f"{DATA}/{{task}}", task=TASKS),
        stages=data_outputs(),
        config=config_file("lineage"),
        dvc="dvc.yaml",
    output:
        LINEAGE_RECORD,
    log:
        "logs/record_lineage.log",
    params:
        data=lambda wildcards, input: os.path.dirname(input.data[0]),  # data.dir
    conda:
        "../../envs/medvisionllama.yaml"
    shell:
        "mvl lineage --data {params.data:q} --config {input.config:q} --record {output:q} > {log:q} 2>&1"
