# The one LLM decoder layer every run of an LLM model needs, read once from its source (the
# packaged GGUF, a local checkpoint, or the hub: hence a local rule on a cluster's login node)
# into a small safetensors file that training and evaluation jobs read: {llm} is the registry name at
# its default layer, or <llm>@<layer> for another layer (a layer sweep).


rule extract_llm_layer:
    output:
        f"{RESULTS}/llm/{{llm}}.safetensors",
    log:
        "logs/extract_llm_layer/{llm}.log",
    params:
        llm=extract_llm,
        options=extract_options,
    conda:
        "../../envs/medvisionllama.yaml"
    shell:
        "mvl extract-layer --llm {params.llm:q} --output {output:q} {params.options:q} > {log:q} 2>&1"
