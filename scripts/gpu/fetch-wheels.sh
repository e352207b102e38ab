#!/usr/bin/env bash
# Download, into .whl/ (git-ignored), the wheels that scripts/gpu/run-gpu-check.sh installs on the
# lent GPU machine, which has no network. Run HERE (with PyPI), from the repository root:
#
#     bash scripts/gpu/fetch-wheels.sh
#
# What the machine lacks (its image: Python 3.12, torch 2.11.0+cu130, transformers 5.17.0, numpy,
# pandas, scipy, tqdm, pyyaml, safetensors; see /work/.library/device/KINDS.md) and the benchmark
# needs: nibabel only (data.io / data.preprocess import it; the benchmark's tiny task goes through
# the project's own synthesize -> split -> preprocess). Not needed there: monai (the benchmark
# trains without augmentation on fixed-size volumes, so no MONAI crop or sliding window), gguf
# (random-weight layers only), snakemake, dvc, jsonschema. transformers stays the machine's 5.17.0:
# the frozen block's attention tests pass with 5.17.0 and with our pin 5.23.0 (checked on the CPU).
# nibabel's own needs on Python 3.12 (numpy, packaging, typing-extensions) are on the machine.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
PY=${PYTHON:-python3}
WHEELS=(
  "nibabel==5.4.2"   # pinned in pyproject.toml
)
rm -rf .whl && mkdir -p .whl
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "${WHEELS[@]}"
ls -l .whl
total=$(du -cb .whl/*.whl | tail -1 | cut -f1)
echo "total: $((total / 1024)) KiB in $(ls .whl/*.whl | wc -l) wheel(s)"
if [ "$total" -gt $((48 * 1024 * 1024)) ]; then
  echo "fetch-wheels.sh: .whl/ is over 48 MiB; the device call carries at most 64 MiB with the repository" >&2
  exit 1
fi
