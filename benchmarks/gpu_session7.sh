#!/usr/bin/env bash
# Device call of 2026-12-03 (session 7, one H200): the scan kernels first (backward v5 timed beside v2 and v4_nocap, the GPU
# cases with v5 as the backward, `bench-scan-cuda` for the card's own copy rate and floors), then, in the background
# (`setsid`, so later calls can poll it), the 13-epoch fp32 training of Ms-Mamba-b on SARS (compiled, channels_last).
# Outcome: the foreground parts ran (data committed); the background b run was lost with the machine (interrupted session).
# Do not copy the background part: run long trainings as benchmarks/gpu_train_call.sh does (foreground calls, --resume).
# Its foreground part is now, up to output paths and timeouts (and the scan timed twice),
#   GPU_VALIDATE_PARTS="bwd tests scan" GPU_VALIDATE_TESTS_BWD=v5 bash benchmarks/gpu_validate.sh OUTDIR
# Usage (repo root, GPU machine): bash benchmarks/gpu_session7.sh OUTDIR PACK
#   foreground: OUTDIR/bwd/bench_scan_bwd_variants.json, OUTDIR/scan_cuda_tests_v5.json, OUTDIR/bench_scan/bench_scan_cuda.json
#   background: OUTDIR/run_b/ (the run), OUTDIR/bg.log, OUTDIR/bg.done
set -u
R=${1:?OUTDIR}; PACK=${2:?PACK}
mkdir -p "$R"; export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu,utilization.gpu --format=csv | tee "$R/nvidia_smi.txt"
echo "== backward variants v2, v4_nocap, v5"
timeout 200 python3 benchmarks/scan_bwd_variants.py --out "$R/bwd" --variants v2,v4_nocap,v5 2>&1 | tail -22
echo "== GPU cases, backward v5"
MSMAMBA_SCAN_BWD=v5 SCAN_CUDA_TESTS_OUT="$R/scan_cuda_tests_v5.json" timeout 200 python3 -m pytest -q -p no:cacheprovider \
  tests/test_scan_cuda_gpu.py -k "not compiled" 2>&1 | tail -3
echo "== bench-scan-cuda (card copy rate and floors)"
timeout 200 python3 -m msmamba_nb.cli bench-scan-cuda --out-dir "$R/bench_scan" --png '' --impls blk --no-torch --reps 30 2>&1 | tail -14
setsid bash -c "
  timeout 1500 python3 -m msmamba_nb.cli train --pack '$PACK' --variant b --epochs 13 --compile --channels-last --seed 0 \
     --time-budget-min 21 --no-progress --run-dir '$R/run_b' > '$R/bg.log' 2>&1
  touch '$R/bg.done'" > /dev/null 2>&1 < /dev/null &
echo "background job started"
