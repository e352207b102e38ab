"""benchmarks/bench_gpu.py: its CPU dry mode runs every code path of the GPU benchmark and reports."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_gpu", ROOT / "benchmarks" / "bench_gpu.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dry_run_measures_every_family_and_passes_its_checks(bench, tmp_path):
    from medvisionllama.llm.registry import LLM_REGISTRY

    real = {name: LLM_REGISTRY[name].make_config().hidden_size for name in bench.PAPER_LLMS}
    out = tmp_path / "gpu.md"
    # a budget no machine can reach: what this test checks must not depend on how busy the machine is
    assert bench.main(["--dry", "--budget-s", "1e9", "--out", str(out), "--workdir", str(tmp_path / "work")]) == 0
    text = out.read_text()
    assert "DRY RUN" in text and "status: finished" in text
    rows = re.findall(r"^\| (\S+) \| (\S+) \| (\d+) \| (\S+) \|.*\| ok \|$", text, flags=re.M)
    cells = {(m, s, loop) for m, s, _, loop in rows}
    assert ("llama3.1-8b-random", "128x128x80", "lean") in cells
    assert ("llama3.1-8b-random", "128x128x80", "train.py") in cells
    for name in bench.PAPER_LLMS:  # every family at "full", Gemma-2's chunked attention included
        assert (f"{name}-random", "240x240x152", "lean") in cells, name
    checks = re.findall(r"^\| (bf16 autocast vs float32 forward|resume vs straight run \(mvl train\)|evaluation on cpu vs CPU "
                        r"\(mvl evaluate\)) \| (\w+) \|", text, flags=re.M)
    assert [result for _, result in checks] == ["pass", "pass", "pass"], checks
    assert "bitwise equal: True" in text  # resume on the CPU is exact
    # the tiny configs were swapped back: the registry has its real dimensions again
    assert {name: LLM_REGISTRY[name].make_config().hidden_size for name in bench.PAPER_LLMS} == real


def test_budget_skips_items_and_says_so(bench, tmp_path):
    out = tmp_path / "gpu.md"
    assert bench.main(["--dry", "--budget-s", "0", "--out", str(out), "--workdir", str(tmp_path / "work")]) == 0
    text = out.read_text()
    assert "## Skipped (time budget)" in text
    assert "- train llama3.1-8b-random 128x128x80 lean (needs ~30 s, 0 s left)" in text
    assert "≥ 20 training cases/s at 128×128×80: not measured" in text
    assert "item(s) skipped for time" in text


def test_only_selects_items(bench):
    import argparse

    items = bench.plan(argparse.Namespace(dry=False, only=["gemma2"]))
    assert items and all("gemma2-9b-random" in item[1][0] for item in items)
    full = bench.plan(argparse.Namespace(dry=False, only=None))
    assert full[0] == ("train", (bench.HEADLINE, "128x128x80", "lean"))  # the headline figure first
    assert [it[1][0] for it in full[2:7]] == [f"{n}-random" for n in ("gemma2-9b", "llama3.1-8b", "mistral-7b",
                                                                      "qwen2-7b", "yi1.5-9b")]
    assert len(full) == len(set(full))
