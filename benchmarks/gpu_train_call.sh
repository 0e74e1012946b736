#!/usr/bin/env bash
# One device call of a training too long for one call: starts the run, or resumes it when RUN_DIR holds its checkpoint, stops
# at the time budget (an epoch boundary), and packs the run's records (not its checkpoints) into $OUT for the way back.
# Make the calls back to back on one warm machine: the checkpoints stay on it, and the machine goes back 30 s after a call.
# This is how Ms-Mamba-b was trained on 2026-12-03 (three calls).
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
#   This is how the 39-epoch t run was trained on 2026-12-03 (three calls, one compilation).
# Across sessions, MSMAMBA_STATE_OUT=1: once the training has stopped (budget or end), the whole run directory, checkpoints
#   included, also goes into $OUT as <run>.state.NN chunks of MSMAMBA_STATE_CHUNK_KB KiB (default 16280, under the 16 MiB a
#   file may come back with) and <run>.state.sha256. Keep them outside git, in RUN_DIR.state/ (e.g. runs/<run>.state/).
#   A later session carries them back, over as many calls as the 64 MiB per call needs (files not named in a call's carry
#   stay on the warm machine): a call that finds no checkpoint in RUN_DIR but RUN_DIR.state/<run>.state.sha256 checks the
#   chunks; with one missing or corrupt it names it and exits 3 without training, else it restores the run and resumes it.
#   In detached mode a call that ends with the training still running also ships a snapshot (after the next complete
#   epoch, waiting at most MSMAMBA_SNAPSHOT_WAIT_S s, default 60): a machine lost between calls then costs one call, not
#   the run (on 2026-12-03 a 12-epoch start was lost that way). Keep BG_WAIT_S + SNAPSHOT_WAIT_S under the call's limit.
# MSMAMBA_EXPECT=resume: refuse (exit 3) to start a new run when RUN_DIR holds no checkpoint, RUN_DIR.state/ no state and no
#   detached training of it runs or has ended here (a run in its first epoch has no checkpoint yet),
#   so that a call made before the state was carried to a fresh machine cannot start the run again from epoch 1.
set -u
RUN=${1:?RUN_DIR}; PACK=${2:?PACK}; BUDGET=${3:?BUDGET_MIN}; shift 3
RUN=${RUN%/}; mkdir -p "$(dirname "$RUN")"
: "${OUT:?OUT, the output folder of the device tool, is not set}"
case "${MSMAMBA_BG_WAIT_S-}" in ''|*[!0-9]*) [ -z "${MSMAMBA_BG_WAIT_S-}" ] ||
  { echo "MSMAMBA_BG_WAIT_S must be whole seconds, got '$MSMAMBA_BG_WAIT_S'"; exit 2; } ;; esac
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
name=$(basename "$RUN"); k=$(( $(cat "$RUN.calls" 2>/dev/null || echo 0) + 1 )); echo "$k" > "$RUN.calls"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$OUT/${name}_$k.smi.txt" 2>&1
state="$RUN.state"; chunk_kb=${MSMAMBA_STATE_CHUNK_KB:-16280}
pid=$(cat "$RUN.pid" 2>/dev/null)   # a detached training of this run, when one was started on this machine
alive() { [ -n "$pid" ] && tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "--run-dir $RUN "; }
if [ ! -f "$RUN/checkpoint_last.pt" ] && [ -f "$state/$name.state.sha256" ]; then
  if ! ( cd "$state" && sha256sum --quiet -c "$name.state.sha256" ); then
    echo "== $state: a chunk listed in $name.state.sha256 is missing or corrupt (above); carry it and call again"; exit 3
  fi
  cat $(awk '{print "'"$state"'/" $2}' "$state/$name.state.sha256") | tar -C "$(dirname "$RUN")" -xf - || exit 3
  rm -f "$RUN.pid" "$RUN.rc"; pid=''; echo "== restored $RUN from $state"
fi
if [ -f "$RUN/checkpoint_last.pt" ]; then
  how="== resuming $RUN"; args=(--resume --run-dir "$RUN" --pack "$PACK" "$@")
elif [ "${MSMAMBA_EXPECT:-}" = resume ] && [ ! -f "$RUN.rc" ] && ! alive; then   # no state carried (yet): no fresh run
  echo "== $RUN has no checkpoint and $state/ no state (MSMAMBA_EXPECT=resume): carry its chunks, nothing started"; exit 3
else
  how="== new run $RUN"; args=(--pack "$PACK" --run-dir "$RUN" "$@")
fi
pack_records() { tar -C "$(dirname "$RUN")" -czf "$OUT/${name}_$k.tgz" --exclude='*.pt' "$name"; }
pack_state() {   # the whole run directory in chunks that can come back (at most 8 files from $OUT, 3 used by the records)
  [ -n "${MSMAMBA_STATE_OUT:-}" ] || return 0
  tar -C "$(dirname "$RUN")" --exclude='*.tmp' -cf - "$name" | split -b "${chunk_kb}K" -d -a 2 - "$OUT/$name.state."
  ( cd "$OUT" && sha256sum "$name".state.[0-9][0-9] > "$name.state.sha256" )
  n=$(wc -l < "$OUT/$name.state.sha256"); echo "== state: $n chunk(s) of at most ${chunk_kb} KiB in \$OUT"
  if [ "$n" -gt 4 ]; then echo "== state needs $n chunks, more than the 4 that can come back: raise MSMAMBA_STATE_CHUNK_KB (≤ 16383)"; return 4; fi
}
if [ -n "${MSMAMBA_BG_WAIT_S:-}" ]; then
  log="$RUN.bg.log"
  if [ -f "$RUN.rc" ]; then
    echo "== the detached training has ended (remove $RUN.rc to start or resume it again, also after removing $RUN)"
  elif alive; then
    echo "== waiting for the detached training (pid $pid)"
  else
    echo "$how (detached)"
    # the session's output goes to the log (appended), never to this call's pipes; the exit code is written atomically
    # (setsid execs in place here, so $! is the detached bash itself; written before this call ends, so no call misses it)
    setsid bash -c 'python3 -m msmamba_nb.cli train "$@"; echo $? > "$0.rc.tmp"; mv "$0.rc.tmp" "$0.rc"' \
      "$RUN" "${args[@]}" --time-budget-min "$BUDGET" --no-progress < /dev/null >> "$log" 2>&1 &
    echo $! > "$RUN.pid"; echo "== detached training started"
  fi
  end=$((SECONDS + MSMAMBA_BG_WAIT_S))
  while [ ! -f "$RUN.rc" ] && [ $SECONDS -lt $end ]; do sleep 1; done
  cp "$log" "$OUT/${name}_$k.log" 2>/dev/null; pack_records
  tail -n 3 "$RUN/log.jsonl" 2>/dev/null | cut -c1-200
  if [ ! -f "$RUN.rc" ]; then
    echo "still running"
    [ -n "${MSMAMBA_STATE_OUT:-}" ] || exit 0
    # a snapshot, so that losing the machine costs at most one call: wait (at most MSMAMBA_SNAPSHOT_WAIT_S s) until the
    # epoch's checkpoints are all written (checkpoint_last.pt is saved after log.jsonl, and the best checkpoint before it)
    end=$((SECONDS + ${MSMAMBA_SNAPSHOT_WAIT_S:-60}))
    until [ "$RUN/checkpoint_last.pt" -nt "$RUN/log.jsonl" ] || [ -f "$RUN.rc" ] || [ $SECONDS -ge $end ]; do sleep 0.2; done
    if [ -f "$RUN/checkpoint_last.pt" ] && [ "$RUN/checkpoint_last.pt" -nt "$RUN/log.jsonl" ]; then
      echo "== snapshot of the running training after epoch $(wc -l < "$RUN/log.jsonl")"; pack_state || exit $?
    else echo "== no snapshot: no epoch's checkpoint is complete yet"; fi
    exit 0
  fi
  rc=$(cat "$RUN.rc"); echo "train exit code $rc"; tail -2 "$log"; pack_state || exit $?; exit "$rc"
fi
echo "$how"
limit=$(python3 -c "import math, sys; print(min(590, math.ceil(float(sys.argv[1]) * 60) + 90))" "$BUDGET") || exit 2
timeout "$limit" python3 -m msmamba_nb.cli train "${args[@]}" --time-budget-min "$BUDGET" --no-progress \
  > "$OUT/${name}_$k.log" 2>&1
rc=$?
echo "train exit code $rc (limit ${limit} s)"
pack_records
tail -2 "$OUT/${name}_$k.log"; tail -n 3 "$RUN/log.jsonl" | cut -c1-200
pack_state || exit $?
exit $rc
