#!/usr/bin/env bash
# One device call of a training too long for one call: starts the run, or resumes it when RUN_DIR holds its checkpoint, stops
# at the time budget (an epoch boundary), and packs the run's records (not its checkpoints) into $OUT for the way back.
# Make the calls back to back on one warm machine: the checkpoints stay on it (b's last checkpoint is ~90 MB and cannot
# travel back), and the machine goes back 30 s after a call. Never run the training in the background: it is lost with
# the machine if the session stops between calls. This is how Ms-Mamba-b was trained on 2026-12-03 (three calls).
# Usage (repo root, GPU machine): bash benchmarks/gpu_train_call.sh RUN_DIR PACK BUDGET_MIN [train options]
#   e.g. bash benchmarks/gpu_train_call.sh runs/b-sars packs/sars_q85.pack 8.7 --variant b --epochs 13 --channels-last --compile --seed 0
#   The same options may be given to every call: a resume keeps the run's saved options (only --device, --workers and
#   the like are taken from the resuming call). Export MSMAMBA_GIT_COMMIT first (the device's tree has no .git).
#   Writes $OUT/<run>_<k>.{log,tgz,smi.txt}, k = the call's number for this run (counted in RUN_DIR.calls).
#   The training gets ceil(BUDGET_MIN·60) + 90 s, at most 590 s (the device's limit per call is 600 s); exit code: train's.
# Detached mode, MSMAMBA_BG_WAIT_S=N: the first call starts the training in its own process session (setsid), so it
#   outlives the call and compiles once; this and every later call (same arguments) waits at most N s for it, then packs
#   the records so far. Exit code: 0 while it still runs ("still running" is printed), train's once it has ended. Keep
#   the calls coming within the machine's 30 s idle limit. BUDGET_MIN then bounds the whole training (no 590 s cap).
set -u
RUN=${1:?RUN_DIR}; PACK=${2:?PACK}; BUDGET=${3:?BUDGET_MIN}; shift 3
RUN=${RUN%/}; mkdir -p "$(dirname "$RUN")"
: "${OUT:?OUT, the output folder of the device tool, is not set}"
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
name=$(basename "$RUN"); k=$(( $(cat "$RUN.calls" 2>/dev/null || echo 0) + 1 )); echo "$k" > "$RUN.calls"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$OUT/${name}_$k.smi.txt" 2>&1
if [ -f "$RUN/checkpoint_last.pt" ]; then
  echo "== resuming $RUN"
  args=(--resume --run-dir "$RUN" --pack "$PACK" "$@")
else
  echo "== new run $RUN"
  args=(--pack "$PACK" --run-dir "$RUN" "$@")
fi
pack_records() { tar -C "$(dirname "$RUN")" -czf "$OUT/${name}_$k.tgz" --exclude='*.pt' "$name"; }
if [ -n "${MSMAMBA_BG_WAIT_S:-}" ]; then
  log="$RUN.bg.log"; pid=$(cat "$RUN.pid" 2>/dev/null)
  if [ -f "$RUN.rc" ]; then
    echo "== the detached training has ended (remove $RUN.rc to start or resume it again)"
  elif [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    echo "== waiting for the detached training (pid $pid)"
  else
    setsid bash -c 'echo $$ > "$0.pid"; python3 -m msmamba_nb.cli train "$@" > "$0.bg.log" 2>&1; echo $? > "$0.rc"' \
      "$RUN" "${args[@]}" --time-budget-min "$BUDGET" --no-progress < /dev/null &
    echo "== detached training started"
  fi
  end=$((SECONDS + MSMAMBA_BG_WAIT_S))
  while [ ! -f "$RUN.rc" ] && [ $SECONDS -lt $end ]; do sleep 5; done
  cp "$log" "$OUT/${name}_$k.log" 2>/dev/null; pack_records
  tail -n 3 "$RUN/log.jsonl" 2>/dev/null | cut -c1-200
  if [ ! -f "$RUN.rc" ]; then echo "still running"; exit 0; fi
  rc=$(cat "$RUN.rc"); echo "train exit code $rc"; tail -2 "$log"; exit "$rc"
fi
limit=$(python3 -c "import math, sys; print(min(590, math.ceil(float(sys.argv[1]) * 60) + 90))" "$BUDGET") || exit 2
timeout "$limit" python3 -m msmamba_nb.cli train "${args[@]}" --time-budget-min "$BUDGET" --no-progress \
  > "$OUT/${name}_$k.log" 2>&1
rc=$?
echo "train exit code $rc (limit ${limit} s)"
pack_records
tail -2 "$OUT/${name}_$k.log"; tail -n 3 "$RUN/log.jsonl" | cut -c1-200
exit $rc
