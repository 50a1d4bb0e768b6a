#!/usr/bin/env bash
# One lent-GPU session's measurements in priority order, each phase time-boxed, every row written to $OUT as
# soon as it is measured (a session cut short still returns its first rows). See RESULTS.md "How to measure".
#   OUT=/tmp/gpu BUDGET=540 FMNIST=.data/fashion-mnist bash benchmarks/gpu_session.sh
#   TINY=1 bash benchmarks/gpu_session.sh        # the same phases on a CPU in seconds (checks the script)
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_out}
FMNIST=${FMNIST:-.data/fashion-mnist}
BUDGET=${BUDGET:-540}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
start=$(date +%s)
left() { echo $((BUDGET - ($(date +%s) - start))); }
log="$OUT/log.txt"
if [ -n "${TINY:-}" ]; then
  dev=(--device cpu --tiny); lightly_args=(--device cpu --tiny --workers 0,1); rest_args=(--device cpu --tiny)
else
  dev=(); lightly_args=(--workers 8,15); rest_args=()
fi
phase() { echo "=== $1 ($(left) s left)" | tee -a "$log"; }
filter() { grep -v -i -E "warn|^\s*$" | tee -a "$log"; }

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
  python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
  nproc; uptime; } > "$OUT/gpu.txt" 2>&1
cat "$OUT/gpu.txt" | tee -a "$log"

phase "1. BYOL ResNet-18 32px b512: ceiling and end to end, eager and compiled (+ profile)"
timeout 240 python3 benchmarks/throughput.py --setups r18 --methods byol --fmnist-root "$FMNIST" "${dev[@]}" \
  --results - --json "$OUT/rows_r18.jsonl" --profile "$OUT" 2>&1 | filter

phase "2. lightly BYOL pipeline, same backbone and batch"
timeout 150 python3 benchmarks/lightly_byol.py --fmnist-root "$FMNIST" "${lightly_args[@]}" --results - \
  --json "$OUT/rows_lightly.jsonl" 2>&1 | filter

phase "3a. DINO multi-crop"
timeout $(($(left) - 150)) python3 benchmarks/throughput.py --setups r18 --methods dino --fmnist-root "$FMNIST" \
  "${rest_args[@]}" --results - --json "$OUT/rows_r18.jsonl" --profile "$OUT" 2>&1 | filter

phase "3b. SimSiam, MoCo v2"
timeout $(($(left) - 40)) python3 benchmarks/throughput.py --setups r18 --methods simsiam,mocov2 \
  --fmnist-root "$FMNIST" "${rest_args[@]}" --results - --json "$OUT/rows_r18.jsonl" 2>&1 | filter

phase "4. GPU tests (a step never syncs the host)"
if [ "$(left)" -gt 10 ]; then
  timeout $(($(left) - 5)) pytest -q -p no:cacheprovider -m gpu tests/test_gpu_path.py 2>&1 | tail -8 | filter
fi
phase "done"
