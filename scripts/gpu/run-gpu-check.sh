#!/usr/bin/env bash
# The GPU part of issue 15 in ONE device call: benchmark + correctness checks + GPU-only tests,
# finishing in under 8 minutes, results in $OUT.
#
# Before the call, HERE (network to PyPI), in the checkout the session's device tool sends
# (the session's own checkout, with this branch merged):
#
#     bash scripts/gpu/fetch-wheels.sh          # -> .whl/nibabel-5.4.2-py3-none-any.whl (~3 MiB)
#
# The call (the device tool's `run`):
#
#     command:   bash scripts/gpu/run-gpu-check.sh
#     carry:     [".whl"]
#     timeout_s: 540
#
# It comes back with $OUT/gpu.md (the report: device, versions, peak memory and cases/s per
# model x size, every check), bench.log, test_gpu.log and env.txt. Copy gpu.md to
# benchmarks/results/gpu.md and commit it. gpu.md is rewritten after every measured item, so even
# a run cut short returns what it measured; items the time budget did not reach are listed in it.
#
# Time plan (seconds from the start): wheels + environment ~10; bench_gpu.py until BENCH_END
# (items start only while the budget leaves them room; hard stop at BENCH_END); then
# tests/test_gpu.py until TOTAL_S. Override with BENCH_BUDGET_S / TOTAL_S in the environment.
# Rehearsal on a CPU (what was run before committing it):
#     OUT=/tmp/gpu-out BENCH_ARGS=--dry bash scripts/gpu/run-gpu-check.sh   # GPU tests skip there
set -uo pipefail
START=$(date +%s)
TOTAL_S=${TOTAL_S:-465}          # everything done by then (< 8 minutes)
TESTS_S=${TESTS_S:-70}           # reserved for tests/test_gpu.py at the end
OUT=${OUT:-/tmp/gpu-check-out}
mkdir -p "$OUT"
cd "$(dirname "$0")/../.."

elapsed() { echo $(( $(date +%s) - START )); }

if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "run-gpu-check.sh: installing .whl/ failed" | tee "$OUT/env.txt"; exit 3; }
  export PYTHONPATH="$PWD/src:/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
else
  echo "run-gpu-check.sh: no .whl/ carried (run scripts/gpu/fetch-wheels.sh here and carry .whl)" >&2
  export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1

{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1
  python3 -c "import sys, torch, transformers, numpy, nibabel; print('python', sys.version.split()[0], '| torch', torch.__version__, 'cuda', torch.version.cuda, '| transformers', transformers.__version__, '| numpy', numpy.__version__, '| nibabel', nibabel.__version__, '| cuda available', torch.cuda.is_available())" 2>&1
  nproc
} > "$OUT/env.txt"
cat "$OUT/env.txt"

BENCH_END=$(( TOTAL_S - TESTS_S ))
BENCH_HARD=$(( BENCH_END - $(elapsed) ))
BENCH_BUDGET_S=${BENCH_BUDGET_S:-$(( BENCH_HARD - 60 ))}   # the longest item (full size) needs < 60 s
echo "[$(elapsed) s] bench_gpu.py: budget ${BENCH_BUDGET_S} s, hard stop after ${BENCH_HARD} s"
# shellcheck disable=SC2086  # BENCH_ARGS: extra options, e.g. --dry to rehearse this script on a CPU
timeout -k 5 "$BENCH_HARD" python3 benchmarks/bench_gpu.py --budget-s "$BENCH_BUDGET_S" --workdir /tmp/bench_gpu \
  --out "$OUT/gpu.md" ${BENCH_ARGS:-} 2>&1 | tee "$OUT/bench.log"
bench_rc=${PIPESTATUS[0]}
[ "$bench_rc" = 124 ] && echo "bench_gpu.py stopped at its hard limit; gpu.md holds the items finished before" | tee -a "$OUT/bench.log"

left=$(( TOTAL_S - $(elapsed) ))
if [ "$left" -gt 20 ]; then
  echo "[$(elapsed) s] tests/test_gpu.py (${left} s left)"
  timeout -k 5 "$left" python3 -m pytest tests/test_gpu.py -m gpu -q -p no:cacheprovider -rA 2>&1 | tee "$OUT/test_gpu.log"
  tests_rc=${PIPESTATUS[0]}
else
  echo "no time left for tests/test_gpu.py" | tee "$OUT/test_gpu.log"
  tests_rc=125
fi
echo "[$(elapsed) s] done: bench_gpu.py exit ${bench_rc}, test_gpu.py exit ${tests_rc}" | tee -a "$OUT/env.txt"
[ "$bench_rc" = 0 ] && [ "$tests_rc" = 0 ]
