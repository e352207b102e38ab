# The paper's outputs: every run's metrics in one long table, then the tables (reproduced,
# published vs reproduced, the paper's claims tested) and the figures, all in the report.
rule resolve_config:
    output:
        f"{RESULTS}/config.yaml",
    log:
        "logs/resolve_config.log",
    params:
        values=json.dumps(config),
    conda:
        "../../envs/medvisionllama.yaml"
    shell:
        "mvl config --values {params.values:q} --output {output:q} > {log:q} 2>&1"


rule resolve_config_part:
    output:
        f"{RESULTS}/config/{{part}}.yaml",
    log:
        "logs/resolve_config_part/{part}.log",
    params:
        values=lambda wildcards: json.dumps(config_part(wildcards.part)),
    conda:
        "../../envs/medvisionllama.yaml"
    shell:
        "mvl config --values {params.values:q} --output {output:q} > {log:q} 2>&1"


rule aggregate_metrics:
    input:
        metrics=run_files("metrics.csv"),
        runs=run_files("run.json"),
        histories=run_files("history.csv"),
    output:
        long=f"{RESULTS}/long.csv",
        curves=f"{RESULTS}/plots/curves.csv",
    log:
        "logs/aggregate_metrics.log",
    params:
        run_dirs=lambda wildcards, input: [os.path.dirname(path) for path in input.runs],
    conda:
        "../../envs/medvisionllama.yaml"
    shell:
        "mvl aggregate {params.run_dirs:q} --out {output.long:q} --curves {output.curves:q} > {log:q} 2>&1"


rule make_tables:
    input:
        long=f"{RESULTS}/long.csv",
        config=f"{RESULTS}/config.yaml",
    output:
        table_files(),
        metrics=f"{RESULTS}/metrics.json",
    log:
        "logs/make_tables.log",
    params:
        outdir=lambda wildcards, output: os.path.dirname(output[0]),
    conda:
        "../../envs/medvisionllama.yaml"
    shell:
        "mvl tables --long {input.long:q} --config {input.config:q} --outdir {params.outdir:q}"
        " --metrics-json {output.metrics:q} > {log:q} 2>&1"


rule make_figures:
    input:
        long=f"{RESULTS}/long.csv",
        curves=f"{RESULTS}/plots/curves.csv",
        config=f"{RESULTS}/config.yaml",
        samples=run_files("samples.npz"),
        datasets=expand(f"{DATA}/{{task}}", task=TASKS),  # dataset.json: the class names
        claims=[f"{TABLES}/{spec.name}_claims.csv" for spec in SPECS],  # the forest plots
    output:
        figure_files(),
    log:
        "logs/make_figures.log",
    params:
        outdir=lambda wildcards, output: os.path.dirname(output[0]),
    threads: 4  # figures drawn at once (Snakemake lowers it to --cores)
    conda:
        "../../envs/medvisionllama.yaml"
    shell:
        "mvl figures --jobs {threads} --long {input.long:q} --config {input.config:q} --outdir {params.outdir:q}"
        " --curves {input.curves:q} --samples {input.samples:q} --datasets {input.datasets:q}"
        " --claims {input.claims:q} > {log:q} 2>&1"


# The committed summary that `dvc metrics show`, `dvc params diff` and `dvc plots` read (dvc.yaml):
# written as soon as the results are, so the DVC views work right after the pipeline; `mvl share`
# rewrites it from the shared copy (the same files, so the same bytes).
localrules:
    summarise_results,


rule summarise_results:
    input:
        long=f"{RESULTS}/long.csv",
        curves=f"{RESULTS}/plots/curves.csv",
        config=f"{RESULTS}/config.yaml",
    output:
        directory(SUMMARY),
    log:
        "logs/summarise_results.log",
    params:
        results=lambda wildcards, input: os.path.dirname(input.long),
    conda:
        "../../envs/medvisionllama.yaml"
    shell:
        "mvl share --summary-only --results {params.results:q} --summary {output:q} > {log:q} 2>&1"
