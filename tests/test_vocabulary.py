"""The vocabulary: the model-name grammar, run keys and sizes, and that it stays light to import."""

from __future__ import annotations

import subprocess
import sys

import pytest

from medvisionllama.errors import InputError
from medvisionllama.vocabulary import (
    LLM_NAMES,
    RunKey,
    known_model_names,
    parse_model_name,
    parse_size,
    size_name,
)


def test_model_name_grammar_kinds_controls_and_layer_files():
    vit, mlp = parse_model_name("vit"), parse_model_name("mlp")
    assert (vit.kind, vit.bridge, vit.llm, vit.layer_llm) == ("vit", "none", None, None)
    assert (mlp.kind, mlp.bridge, mlp.layer_llm) == ("mlp", "mlp", None)
    pre = parse_model_name("yi1.5-9b")
    assert (pre.kind, pre.llm, pre.control, pre.pretrained, pre.layer_llm) == ("llm", "yi1.5-9b", None, True, "yi1.5-9b")
    rnd = parse_model_name("gemma2-9b-random")
    assert (rnd.llm, rnd.control, rnd.pretrained, rnd.layer_llm) == ("gemma2-9b", "random", False, None)
    shuf = parse_model_name("smollm2-135m-shuffled")  # permutes the pretrained tensors: needs the layer file
    assert (shuf.llm, shuf.control, shuf.pretrained, shuf.layer_llm) == ("smollm2-135m", "shuffled", False, "smollm2-135m")
    for bad in ("llama2-7b", "llm:gemma2-9b", "vit-random", "smollm2-135m-permuted", ""):
        with pytest.raises(InputError, match="unknown model"):
            parse_model_name(bad)
    names = known_model_names()
    assert len(names) == 2 + 3 * len(LLM_NAMES) and "qwen2-7b-shuffled" in names
    assert all(parse_model_name(n).name == n for n in names)


def test_run_key_path_round_trip_and_bad_paths():
    key = RunKey("Task01_BrainTumour", "smollm2-135m-random", "hybrid-parallel", "32x32x16", 7)
    assert key.path() == "Task01_BrainTumour/smollm2-135m-random/hybrid-parallel/32x32x16/seed7"
    assert key.group() == "Task01_BrainTumour/smollm2-135m-random/hybrid-parallel/32x32x16"
    assert RunKey.from_path(f"results/runs/{key.path()}") == key
    assert RunKey.from_path(f"/abs/results/runs/{key.path()}/samples.npz") == key
    for bad in ("a/b/c/samples.npz", "T/m/a/s/seedX/samples.npz"):
        with pytest.raises(InputError, match="expected"):
            RunKey.from_path(bad)


def test_size_grammar():
    assert parse_size("64x64x40") == (64, 64, 40) and parse_size("full") is None
    assert size_name((64, 64, 40)) == "64x64x40" and size_name(None) == "full"
    for bad in ("64x64", "0x1x1", "axbxc"):
        with pytest.raises(InputError, match="invalid input size"):
            parse_size(bad)


def test_vocabulary_and_experiments_import_neither_torch_nor_transformers():
    """Snakemake imports these at parse time on every job."""
    code = ("import sys, medvisionllama.vocabulary, medvisionllama.experiments, medvisionllama.paper.outputs; "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
