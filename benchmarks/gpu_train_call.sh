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
limit=$(python3 -c "import math, sys; print(min(590, math.ceil(float(sys.argv[1]) * 60) + 90))" "$BUDGET") || exit 2
timeout "$limit" python3 -m msmamba_nb.cli train "${args[@]}" --time-budget-min "$BUDGET" --no-progress \
  > "$OUT/${name}_$k.log" 2>&1
rc=$?
echo "train exit code $rc (limit ${limit} s)"
tar -C "$(dirname "$RUN")" -czf "$OUT/${name}_$k.tgz" --exclude='*.pt' "$name"
tail -2 "$OUT/${name}_$k.log"; tail -n 3 "$RUN/log.jsonl" | cut -c1-200
exit $rc
