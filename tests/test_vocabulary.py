"""The vocabulary: the model-name grammar, run keys and sizes, and that it stays light to import."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from medvisionllama.errors import InputError
from medvisionllama.vocabulary import (
    LLM_NAMES,
    REPLICATE_PATTERN,
    RunKey,
    parse_replicate,
    replicate_name,
    with_layer,
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


def test_run_key_with_fold_round_trips_and_keeps_the_single_split_path():
    single = RunKey("Task02_Heart", "vit", "hybrid-sequential", "64x64x40", 0)
    assert single.fold is None and single.replicate == "seed0" and single.path().endswith("/64x64x40/seed0")
    folded = single._replace(fold=3)
    assert folded.replicate == "seed0-fold3" and folded.path() == "Task02_Heart/vit/hybrid-sequential/64x64x40/seed0-fold3"
    assert folded.group() == single.group() == "Task02_Heart/vit/hybrid-sequential/64x64x40"
    assert folded != single and RunKey.from_path(f"r/runs/{folded.path()}/metrics.csv") == folded
    assert RunKey.from_path(f"r/runs/{single.path()}") == single
    layered = RunKey("Task02_Heart", "smollm2-135m-shuffled@15", "spatial", "full", 2, 0)
    assert RunKey.from_path(layered.path()) == layered
    for bad in ("T/m/a/s/seed0-fold", "T/m/a/s/seed0-foldx/x.npz", "T/m/a/s/seed0fold1"):
        with pytest.raises(InputError, match="expected"):
            RunKey.from_path(bad)
    assert parse_replicate("seed12-fold4") == (12, 4) and parse_replicate("seed1") == (1, None)
    assert replicate_name(1) == "seed1" and replicate_name(1, 0) == "seed1-fold0"
    assert re.fullmatch(REPLICATE_PATTERN, "seed0-fold2") and not re.fullmatch(REPLICATE_PATTERN, "seed0-2")


def test_model_name_layer_suffix():
    plain = parse_model_name("smollm2-135m")
    assert plain.layer is None and plain.layer_llm == "smollm2-135m" and plain.base == "smollm2-135m"
    at0 = parse_model_name("smollm2-135m@0")
    assert (at0.llm, at0.control, at0.layer, at0.pretrained, at0.layer_llm) == ("smollm2-135m", None, 0, True, "smollm2-135m@0")
    shuf = parse_model_name("llama3.1-8b-shuffled@15")  # the shuffled control permutes that layer's tensors
    assert (shuf.llm, shuf.control, shuf.layer, shuf.layer_llm, shuf.base) == (
        "llama3.1-8b", "shuffled", 15, "llama3.1-8b@15", "llama3.1-8b-shuffled")
    rnd = parse_model_name("qwen2-7b-random@3")
    assert (rnd.control, rnd.layer, rnd.layer_llm) == ("random", 3, None)
    for bad in ("smollm2-135m@-1", "smollm2-135m@01", "smollm2-135m@", "smollm2-135m@x", "smollm2-135m@1@2"):
        with pytest.raises(InputError, match="non-negative integer"):
            parse_model_name(bad)
    for bad in ("vit@0", "mlp@3", "llama2-7b@0"):
        with pytest.raises(InputError):
            parse_model_name(bad)
    assert with_layer("smollm2-135m", 4) == "smollm2-135m@4" and with_layer("smollm2-135m", None) == "smollm2-135m"


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
