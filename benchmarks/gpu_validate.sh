#!/usr/bin/env bash
# One device call that checks and times the HEAD scan kernels on a GPU beside an older tree's, and profiles a training
# step. Usage (repo root, on the GPU machine): bash benchmarks/gpu_validate.sh OUTDIR [REF_TREE]
#   REF_TREE: a folder holding an older msmamba_nb/ (e.g. `git archive <commit> msmamba_nb | tar -x -C REF_TREE`).
# Writes into OUTDIR: scan_cuda_tests.json (the GPU cases), bench_scan_{head,ref,head2}/bench_scan_cuda.json (timed in the
# order head, ref, head again, so the spread between the two head runs bounds the noise), profile_*.txt, bench_train_*.json.
# Set GPU_VALIDATE_PARTS to a subset of "bwd tests scan profile train" (default: all but bwd) to run fewer parts.
#   bwd: benchmarks/scan_bwd_variants.py over GPU_VALIDATE_BWD_VARIANTS (default v2,v4_nocap,v5) -> OUTDIR/bwd/.
#   GPU_VALIDATE_TESTS_BWD=v5 runs the GPU cases with that backward variant (MSMAMBA_SCAN_BWD) -> scan_cuda_tests_v5.json.
# Session 7's kernel part (benchmarks/gpu_session7.sh) is, up to output paths and timeouts, GPU_VALIDATE_PARTS="bwd tests scan" GPU_VALIDATE_TESTS_BWD=v5.
set -u
R=${1:?usage: gpu_validate.sh OUTDIR [REF_TREE]}; REF=${2:-}
PARTS=${GPU_VALIDATE_PARTS:-tests scan profile train}
mkdir -p "$R"; export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
has() { case " $PARTS " in *" $1 "*) return 0;; esac; return 1; }
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu,utilization.gpu --format=csv | tee "$R/nvidia_smi.txt"
python3 -c "import torch, numba, numpy, numba_cuda; print('torch', torch.__version__, 'numba', numba.__version__, 'numba_cuda', numba_cuda.__version__, 'numpy', numpy.__version__)"
if has bwd; then
  echo "== backward variants ${GPU_VALIDATE_BWD_VARIANTS:-v2,v4_nocap,v5}"
  timeout 200 python3 benchmarks/scan_bwd_variants.py --out "$R/bwd" --variants "${GPU_VALIDATE_BWD_VARIANTS:-v2,v4_nocap,v5}" 2>&1 | tail -22
fi
if has tests; then
  TB=${GPU_VALIDATE_TESTS_BWD:-}
  echo "== GPU cases (tests/test_scan_cuda_gpu.py, compile tests excluded)${TB:+, backward $TB}"
  (  # a subshell, so that the later parts keep the default backward; an empty MSMAMBA_SCAN_BWD would be refused
    [ -n "$TB" ] && export MSMAMBA_SCAN_BWD="$TB"
    SCAN_CUDA_TESTS_OUT="$R/scan_cuda_tests${TB:+_$TB}.json" timeout 300 \
      python3 -m pytest -q -p no:cacheprovider tests/test_scan_cuda_gpu.py -k "not compiled" 2>&1 | tail -5
  )
fi
if has scan; then
  for t in head ref head2; do
    if [ "$t" = ref ]; then [ -n "$REF" ] || continue; dir="$REF"; else dir=.; fi
    echo "== scan benchmark: $t ($dir)"
    (cd "$dir" && timeout 240 python3 -m msmamba_nb.cli bench-scan-cuda --out-dir "$R/bench_scan_$t" --png '' --impls blk --no-torch --reps 30 \
      2>&1 | grep -E "grouped|released|floor|copy" | head -14)
  done
fi
if has profile; then
  for prec in fp32 bf16; do
    echo "== profile, eager $prec"
    timeout 180 python3 benchmarks/profile_train_step.py --out "$R/profile_${prec}_eager.txt" --eager --precision "$prec" 2>&1 | head -3
  done
fi
if has train; then
  echo "== bench-train, eager (no TF32, then TF32)"
  timeout 240 python3 -m msmamba_nb.cli bench-train --configs fp32,fp32+cl,bf16,bf16+cl --out "$R/bench_train_eager.json" 2>&1 | tail -4
  timeout 240 python3 -m msmamba_nb.cli bench-train --configs fp32,fp32+cl --tf32 --out "$R/bench_train_eager_tf32.json" 2>&1 | tail -2
fi
echo "== done"
