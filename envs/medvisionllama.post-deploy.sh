#!/usr/bin/env bash
# Snakemake runs this after it has created the conda environment of envs/medvisionllama.yaml,
# inside that environment, from Snakemake's working directory (the repository root): it installs
# what a conda environment file cannot say (see the header of medvisionllama.yaml).
set -euo pipefail
if ! grep -qs '^name = "medvisionllama"' pyproject.toml; then
    echo "medvisionllama.post-deploy.sh: run snakemake from the medvisionllama repository root (cwd: $PWD)" >&2
    exit 1
fi
python -m pip install --no-deps -r envs/medvisionllama.no-deps.txt
python -m pip install --no-deps -e .
