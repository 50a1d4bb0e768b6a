#!/usr/bin/env bash
# One lent-GPU session's measurements in priority order, each phase time-boxed, every row written to $OUT as
# soon as it is measured (a session cut short still returns its first rows). See RESULTS.md "How to measure".
#   OUT=/tmp/gpu BUDGET=540 FMNIST=.data/fashion-mnist bash benchmarks/gpu_session.sh
#   TINY=1 bash benchmarks/gpu_session.sh        # the same phases on a CPU in seconds (checks the script)
# Wheels to carry: pytest and its deps, lightly==1.6.0 + lightning-utilities (phase 6); data: .data/fashion-mnist.
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
  STREAM_IMAGES=${STREAM_IMAGES:-64} STREAM_WORKERS=${STREAM_WORKERS:-0} STREAM_DECODE=${STREAM_DECODE:-cpu}
else
  dev=(); lightly_args=(--workers 8,15); rest_args=()
fi
phase() { echo "=== $1 ($(left) s left)" | tee -a "$log"; }
filter() { grep -v -i -E "warn|^\s*$" | tee -a "$log"; }

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
  python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
  nproc; uptime; } > "$OUT/gpu.txt" 2>&1
cat "$OUT/gpu.txt" | tee -a "$log"

# Order: what the first session (2026-11-30, benchmarks/gpu_2026-11-30/) left open comes first. PHASES picks
# phases by number (default: all, in this order), e.g. PHASES="1 2" for the CUDA-graph rows only.
PHASES=${PHASES:-"1 2 3 4 5 6"}
want() { [[ " $PHASES " == *" $1 "* ]] && [ "$(left)" -gt 20 ]; }

if want 1; then
  phase "1. DINO multi-crop and MoCo v2 under CUDA graphs (trainer.compile_mode=reduce-overhead)"
  timeout $(( $(left) < 200 ? $(left) : 200 )) python3 benchmarks/throughput.py --setups r18 --methods dino,mocov2 \
    --compile --compile-mode reduce-overhead --compiled-only --fmnist-root "$FMNIST" "${rest_args[@]}" --results - \
    --json "$OUT/rows_r18_cudagraphs.jsonl" 2>&1 | filter
fi

if want 2; then
  phase "2. GPU tests (a step never syncs the host; nvjpeg crops match the CPU path)"
  timeout $(( $(left) < 120 ? $(left) : 120 )) pytest -q -p no:cacheprovider -m gpu tests/test_gpu_path.py \
    tests/test_gpu_decode.py 2>&1 | tail -8 | filter
fi

if want 3; then
  phase "3. Streaming JPEG folder: ssl-zoo CPU workers and data.decode=gpu vs torchvision ImageFolder + PIL"
  timeout $(( $(left) < 200 ? $(left) : 200 )) python3 benchmarks/streaming.py --images "${STREAM_IMAGES:-4000}" \
    --workers ${STREAM_WORKERS:-8 15} --small 0 --decode "${STREAM_DECODE:-gpu}" --out "$OUT/streaming.json" 2>&1 | filter
fi

if want 4; then
  phase "4. ResNet-50 224px b128 BYOL: ceiling and end to end, eager and CUDA graphs"
  timeout $(( $(left) < 200 ? $(left) : 200 )) python3 benchmarks/throughput.py --setups r50 --methods byol \
    --compile --compile-mode reduce-overhead --fmnist-root "$FMNIST" "${rest_args[@]}" --results - \
    --json "$OUT/rows_r50.jsonl" 2>&1 | filter
fi

if want 5; then
  phase "5. BYOL ResNet-18 32px b512 under CUDA graphs again (the 2026-11-30 headline), with a profile"
  timeout $(( $(left) < 150 ? $(left) : 150 )) python3 benchmarks/throughput.py --setups r18 --methods byol \
    --compile --compile-mode reduce-overhead --compiled-only --fmnist-root "$FMNIST" "${dev[@]}" --results - \
    --json "$OUT/rows_r18_cudagraphs.jsonl" --profile "$OUT" 2>&1 | filter
fi

if want 6; then
  phase "6. lightly BYOL pipeline, same backbone and batch"
  timeout $(( $(left) < 150 ? $(left) : 150 )) python3 benchmarks/lightly_byol.py --fmnist-root "$FMNIST" \
    "${lightly_args[@]}" --results - --json "$OUT/rows_lightly.jsonl" 2>&1 | filter
fi
phase "done"
