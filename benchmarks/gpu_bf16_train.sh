#!/usr/bin/env bash
# Device calls of 2026-12-03 (one H200), second part: the grouped-conv float32 change under bf16 autocast, measured
# eager beside an older tree in the foreground, then (in the background, `setsid`, so that later calls can poll it)
# compiled fp32/bf16 throughput and a 13-epoch bf16 training of t on SARS.
# Usage (repo root, GPU machine): bash benchmarks/gpu_bf16_train.sh OUTDIR REF_TREE PACK
#   foreground: OUTDIR/bench_train_eager_{head,ref}.json
#   background: OUTDIR/bench_train_compiled.json, then OUTDIR/run/ (the training run), OUTDIR/bg.log, OUTDIR/bg.done
set -u
R=${1:?OUTDIR}; REF=${2:?REF_TREE}; PACK=${3:?PACK}
mkdir -p "$R"; export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
for t in head ref; do
  if [ "$t" = ref ]; then dir="$REF"; else dir=.; fi
  echo "== eager bench-train: $t ($dir)"
  (cd "$dir" && timeout 200 python3 -m msmamba_nb.cli bench-train --configs fp32,bf16,bf16+cl --out "$R/bench_train_eager_$t.json" 2>&1 | tail -3)
done
setsid bash -c "
  timeout 900 python3 -m msmamba_nb.cli bench-train --configs fp32+cl+compile,bf16+cl+compile --out '$R/bench_train_compiled.json' > '$R/bg.log' 2>&1
  timeout 1200 python3 -m msmamba_nb.cli train --pack '$PACK' --variant t --epochs 13 --bf16 --channels-last --compile --seed 0 \
     --time-budget-min 16 --no-progress --run-dir '$R/run' >> '$R/bg.log' 2>&1
  touch '$R/bg.done'" > /dev/null 2>&1 < /dev/null &
echo "background job started"
