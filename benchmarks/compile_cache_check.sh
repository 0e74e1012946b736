#!/usr/bin/env bash
# Does `msmamba train --compile-cache` save the compiling on a later process, and how small does the cache pack?
# Two fresh processes train 1 epoch of t (fp32, channels_last, compiled, batch 58, 224 px: the step of the Table I runs)
# on the bundled 200-cell sample pack; the first compiles afresh and writes the cache, the second loads it. Then the cache
# file is compressed (xz -6, zstd -19 when present) to see whether it fits a device call's 64 MiB beside the tree.
# Usage (repo root, GPU machine): bash benchmarks/compile_cache_check.sh   (writes $OUT/compile_cache_check.log)
# Give it a call of its own, 600 s: on a fresh H100 (2026-12-07, commit e81a7b1) the first process alone took 318 s, 269 s of
# it compiling, and a 400 s limit cut the second process off before it reported (its lines, held in grep's buffer, were lost;
# grep now flushes each line).
set -u
: "${OUT:?OUT, the output folder of the device tool, is not set}"
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f s", b - a }'; }   # seconds since $EPOCHREALTIME was $1
log="$OUT/compile_cache_check.log"; cc=runs/cc_check
rm -rf "$cc" runs/cc_check_1 runs/cc_check_2
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; python3 -c 'import torch; print("torch", torch.__version__)'
  for k in 1 2; do
    echo "== process $k"; t0=$EPOCHREALTIME
    python3 -m msmamba_nb.cli train --pack sample --variant t --epochs 1 --channels-last --compile --seed 0 --no-progress \
      --compile-cache "$cc" --run-dir runs/cc_check_$k 2>&1 | grep --line-buffered -E "compile cache|first compiled step|Error|error"
    echo "process $k wall: $(since "$t0")"
  done
  ls -la "$cc"
  f=$(ls "$cc"/*.bin 2>/dev/null | head -1)
  [ -n "$f" ] || { echo "no compile cache file in $cc: process 1 wrote none (see its lines above)"; exit 1; }
  t0=$EPOCHREALTIME; xz -6 -T16 -k -c "$f" > "$cc/cache.xz"; echo "xz -6: $(stat -c %s "$cc/cache.xz") bytes, $(since "$t0")"
  if command -v zstd >/dev/null; then t0=$EPOCHREALTIME; zstd -19 -T16 -q -c "$f" > "$cc/cache.zst"; echo "zstd -19: $(stat -c %s "$cc/cache.zst") bytes, $(since "$t0")"; fi
} > "$log" 2>&1
cat "$log"
