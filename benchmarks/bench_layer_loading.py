"""Benchmark: layer-only loading (``medvisionllama.llm``) vs ``from_pretrained`` of the whole model.

Writes a sharded bf16 safetensors checkpoint with Llama-3.1-8B's layer dimensions (hidden 4096,
MLP 14336, 32 heads, 8 key/value heads; 4 layers, a 1024-token vocabulary: ~1.8 GB, one shard per
layer as ``save_pretrained`` would cut it) to a temporary folder, then loads the last layer both
ways, each in a fresh subprocess, alternating, ``--repeats`` times. Reports wall time of the load
and the process's peak RSS (``VmHWM``), and the RSS of a process that only imports the same
modules. The temporary checkpoint is deleted at the end.

Run by hand (not a test):  .venv/bin/python benchmarks/bench_layer_loading.py [--repeats 2] [--output FILE]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

LAYERS = 4
DIMS = dict(hidden_size=4096, intermediate_size=14336, num_attention_heads=32, num_key_value_heads=8, head_dim=128)
VOCAB = 1024

CHILD = r"""
import json, sys, time
import torch
from transformers import AutoModelForCausalLM, LlamaConfig
from medvisionllama.llm import FrozenLLMBlock, read_layer_from_directory
method, directory, layer, dtype = sys.argv[1], sys.argv[2], int(sys.argv[3]), getattr(torch, sys.argv[4])

def checksum_of(module):  # exact, and without float copies of the weights
    return sum(int(p.detach().view(-1)[:: 997].double().sum() * 1e6) for p in module.parameters())

start = time.perf_counter()
if method == "layer-only":
    config = LlamaConfig.from_pretrained(directory)
    with torch.device("meta"):
        block = FrozenLLMBlock(config, "llama", layer)
    block.to(dtype)
    block.load_layer_state_dict(read_layer_from_directory(directory, layer))
    params = sum(p.numel() for p in block.parameters())
    checksum = checksum_of(block)
elif method == "from_pretrained":
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=dtype)
    layer_module = model.model.layers[layer]
    params = sum(p.numel() for p in layer_module.parameters())
    checksum = checksum_of(layer_module)
else:  # import only
    params, checksum = 0, 0.0
seconds = time.perf_counter() - start
# VmHWM: this process image's RSS high-water mark (ru_maxrss would carry over the parent's across fork+exec)
peak_mib = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:")) / 1024
print(json.dumps({"method": method, "dtype": sys.argv[4], "seconds": seconds, "peak_rss_mib": peak_mib, "params": params, "checksum": checksum}))
"""


def write_checkpoint(directory: Path) -> int:
    """Sharded bf16 checkpoint in the Hugging Face layout; returns its size in bytes."""
    import torch
    from safetensors.torch import save_file
    from transformers import LlamaConfig

    config = LlamaConfig(**DIMS, num_hidden_layers=LAYERS, vocab_size=VOCAB, tie_word_embeddings=False, rms_norm_eps=1e-5)
    config.dtype = torch.bfloat16
    config.save_pretrained(directory)
    h, i, q, kv = DIMS["hidden_size"], DIMS["intermediate_size"], 32 * 128, 8 * 128
    shapes = {
        "self_attn.q_proj.weight": (q, h), "self_attn.k_proj.weight": (kv, h), "self_attn.v_proj.weight": (kv, h),
        "self_attn.o_proj.weight": (h, q), "mlp.gate_proj.weight": (i, h), "mlp.up_proj.weight": (i, h),
        "mlp.down_proj.weight": (h, i), "input_layernorm.weight": (h,), "post_attention_layernorm.weight": (h,),
    }
    generator = torch.Generator().manual_seed(0)

    def tensor(shape):
        if len(shape) == 1:
            return torch.ones(shape, dtype=torch.bfloat16)
        return (torch.randn(shape, generator=generator) * 0.02).to(torch.bfloat16)

    n_shards = LAYERS + 1
    weight_map, total = {}, 0
    for index in range(n_shards):
        name = f"model-{index + 1:05d}-of-{n_shards:05d}.safetensors"
        if index == 0:
            tensors = {"model.embed_tokens.weight": tensor((VOCAB, h)), "lm_head.weight": tensor((VOCAB, h)),
                       "model.norm.weight": tensor((h,))}
        else:
            tensors = {f"model.layers.{index - 1}.{k}": tensor(s) for k, s in shapes.items()}
        save_file(tensors, str(directory / name), metadata={"format": "pt"})
        total += sum(t.numel() * t.element_size() for t in tensors.values())
        weight_map.update({k: name for k in tensors})
        del tensors
    index_json = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index_json, indent=2))
    return sum(f.stat().st_size for f in directory.iterdir())


def run_child(method: str, directory: Path, layer: int, dtype: str = "bfloat16") -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, method, str(directory), str(layer), dtype],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--output", help="also write the Markdown report here")
    parser.add_argument("--tmp", default=None, help="parent folder of the temporary checkpoint")
    parser.add_argument("--write-checkpoint", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.write_checkpoint:
        write_checkpoint(Path(args.write_checkpoint))
        return 0
    directory = Path(tempfile.mkdtemp(prefix="bench-layer-loading-", dir=args.tmp))
    try:
        subprocess.run([sys.executable, __file__, "--write-checkpoint", str(directory)], check=True)
        size = sum(f.stat().st_size for f in directory.iterdir())
        layer = LAYERS - 1
        results = [run_child("import-only", directory, layer)]
        for dtype in ("bfloat16", "float32"):
            for _ in range(args.repeats):
                results += [run_child(m, directory, layer, dtype) for m in ("layer-only", "from_pretrained")]
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    for dtype in ("bfloat16", "float32"):
        sums = {r["checksum"] for r in results if r["method"] != "import-only" and r["dtype"] == dtype}
        assert len(sums) == 1, f"the two methods disagree in {dtype}"
    lines = [
        "# Layer-only loading vs from_pretrained",
        "",
        f"- date: {datetime.date.today().isoformat()}; machine: {os.cpu_count()} CPU cores, {platform.machine()}, "
        f"Python {platform.python_version()}; command: `.venv/bin/python benchmarks/bench_layer_loading.py`",
        f"- checkpoint: bf16 safetensors, Llama-3.1-8B layer dimensions, {LAYERS} layers, vocabulary {VOCAB}, "
        f"{LAYERS + 1} shards, {size / 2**30:.2f} GiB on disk; loading layer {LAYERS - 1} "
        f"({results[1]['params']:,} parameters, {results[1]['params'] * 2 / 2**20:.0f} MiB in bf16)",
        "- each row is a fresh subprocess; time = the load only (imports excluded); peak RSS = VmHWM of the "
        "process (imports included; `import-only` is that baseline). The two methods' layer weights agree (checksum).",
        "",
        "| method | dtype | seconds | peak RSS (MiB) | peak RSS - import-only (MiB) |",
        "|---|---|---:|---:|---:|",
    ]
    base = results[0]["peak_rss_mib"]
    for r in results:
        lines.append(f"| {r['method']} | {r['dtype'] if r['method'] != 'import-only' else ''} | {r['seconds']:.2f} | {r['peak_rss_mib']:.0f} | {r['peak_rss_mib'] - base:.0f} |")
    report = "\n".join(lines) + "\n"
    print(report)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
