#!/usr/bin/env bash
# Several trainings in one device call: every run goes through gpu_train_call.sh (detached) at the same time, each on its
# own GPU of a multi-GPU machine or several sharing one; the records of all come back in one archive, and the full state
# of one run per call (a state is 53.5 MB for t: one fits the 64 MiB a call may bring back, two do not).
# Usage (repo root, GPU machine): bash benchmarks/gpu_train_many.sh PACK BUDGET_MIN 'RUN_DIR[@GPU] [train options]' ...
#   e.g. MSMAMBA_BG_WAIT_S=470 MSMAMBA_STATE_RUN=auto bash benchmarks/gpu_train_many.sh packs/sars_q85.pack 25 \
#          'runs/SARS-t-stratified-s1-e200@0 --variant t --epochs 200 --seed 1 --channels-last --compile' \
#          'runs/SARS-t-stratified-s2-e200@1 --variant t --epochs 200 --seed 2 --channels-last --compile'
#   One quoted spec per run: its run directory, optionally @GPU (CUDA_VISIBLE_DEVICES for it; none: all share the
#   default), then its train options (split at spaces: no option value may hold one). Run names (the directories'
#   basenames) must differ. Give the same specs to every call: each run starts, resumes or restores as gpu_train_call.sh
#   decides for it, and a run that has ended is reported, not restarted.
# MSMAMBA_BG_WAIT_S (required) is passed on: every call waits at most that long, then returns with the trainings running;
#   the run whose state comes back waits up to MSMAMBA_SNAPSHOT_WAIT_S (default 60) more for its snapshot. Nothing reaches
#   $OUT before the end, so the two together may not exceed 540 s (the device's call limit is 600 s).
# MSMAMBA_STATE_RUN=NAME ships that run's state as chunks (gpu_train_call.sh's MSMAMBA_STATE_OUT, with its snapshot of a
#   running training); MSMAMBA_STATE_RUN=auto takes the runs in turn, one per call (call k ships spec (k-1) mod n), so over
#   n calls every run's state has come back once; unset: no state comes back.
# MSMAMBA_RESUME_ONLY='NAME ...' (or 'all'): those runs never start afresh (gpu_train_call.sh's MSMAMBA_EXPECT=resume). On a
#   fresh machine the states come over several calls (64 MiB each: the pack and one run's chunk .03 first, then per run
#   its other chunks); until a run's chunks are all there, its call exits 3 and the others train.
# Writes $OUT/many_<k>.tgz (per run: the call's log, records archive, nvidia-smi output, stdout and exit code) and the one
#   run's state chunks; k counts this wrapper's calls (in runs/many.calls, or MSMAMBA_MANY_CALLS).
#   Exit code: 0 when every run's call returned 0, else the first non-zero one in spec order; 2 for bad arguments;
#   4 when the records or the state could not be put into $OUT.
set -u
PACK=${1:?PACK}; BUDGET=${2:?BUDGET_MIN}; shift 2
[ $# -ge 1 ] || { echo "gpu_train_many.sh: give at least one run spec ('RUN_DIR[@GPU] [train options]')"; exit 2; }
: "${OUT:?OUT, the output folder of the device tool, is not set}"
[ -n "${MSMAMBA_BG_WAIT_S:-}" ] || { echo "gpu_train_many.sh: set MSMAMBA_BG_WAIT_S (the trainings run detached)"; exit 2; }
case "$MSMAMBA_BG_WAIT_S${MSMAMBA_SNAPSHOT_WAIT_S-}" in *[!0-9]*) echo "gpu_train_many.sh: MSMAMBA_BG_WAIT_S and MSMAMBA_SNAPSHOT_WAIT_S must be whole seconds"; exit 2 ;; esac
if [ $(( MSMAMBA_BG_WAIT_S + ${MSMAMBA_SNAPSHOT_WAIT_S:-60} )) -gt 540 ]; then   # everything reaches $OUT only at the end
  echo "gpu_train_many.sh: MSMAMBA_BG_WAIT_S + MSMAMBA_SNAPSHOT_WAIT_S (default 60) is over 540 s: the call could outlast its 600 s"; exit 2
fi
here=$(cd "$(dirname "$0")" && pwd)
inlist() { local x=$1 y; shift; for y in "$@"; do [ "$y" = "$x" ] && return 0; done; return 1; }
runs=(); gpus=(); opts=(); names=()
for spec in "$@"; do
  first=${spec%% *}; rest=${spec#"$first"}; run=${first%@*}; gpu=''
  [[ $first == *@* ]] && gpu=${first##*@}
  [ -n "$run" ] || { echo "gpu_train_many.sh: spec '$spec' names no run directory"; exit 2; }
  case "$gpu" in *[!0-9,]*) echo "gpu_train_many.sh: spec '$spec': GPU '$gpu' is not a device index list"; exit 2 ;; esac
  name=$(basename "${run%/}")
  ! inlist "$name" "${names[@]}" || { echo "gpu_train_many.sh: two specs name the run '$name'"; exit 2; }
  runs+=("$run"); gpus+=("$gpu"); opts+=("$rest"); names+=("$name")
done
set -f; read -r -d '' -a resume_only <<< "${MSMAMBA_RESUME_ONLY:-}"; set +f   # names split at any whitespace, no globbing
for m in "${resume_only[@]}"; do
  [ "$m" = all ] || inlist "$m" "${names[@]}" ||
    { echo "gpu_train_many.sh: MSMAMBA_RESUME_ONLY names '$m', none of the runs (${names[*]})"; exit 2; }
done
n=${#names[@]}
calls=${MSMAMBA_MANY_CALLS:-runs/many.calls}; mkdir -p "$(dirname "$calls")"
k=$(( $(cat "$calls" 2>/dev/null || echo 0) + 1 ))
pick=${MSMAMBA_STATE_RUN:-}
if [ "$pick" = auto ]; then pick=${names[$(( (k - 1) % n ))]}
elif [ -n "$pick" ] && ! inlist "$pick" "${names[@]}"; then
  echo "gpu_train_many.sh: MSMAMBA_STATE_RUN='$pick' is none of the runs (${names[*]}) nor 'auto'"; exit 2
fi
echo "$k" > "$calls"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
for i in "${!names[@]}"; do
  d="$tmp/${names[$i]}"; mkdir "$d"
  (
    [ -z "${gpus[$i]}" ] || export CUDA_VISIBLE_DEVICES="${gpus[$i]}"
    if [ "${names[$i]}" = "$pick" ]; then export MSMAMBA_STATE_OUT=1; else unset MSMAMBA_STATE_OUT; fi
    if inlist all "${resume_only[@]}" || inlist "${names[$i]}" "${resume_only[@]}"; then export MSMAMBA_EXPECT=resume
    else unset MSMAMBA_EXPECT; fi
    set -f
    # shellcheck disable=SC2086  # the options are split at spaces on purpose (set -f: not globbed)
    OUT="$d" bash "$here/gpu_train_call.sh" "${runs[$i]}" "$PACK" "$BUDGET" ${opts[$i]} > "$d/call.out" 2>&1
    echo $? > "$d/call.rc"
  ) &
done
wait
rc=0
for i in "${!names[@]}"; do
  d="$tmp/${names[$i]}"; r=$(cat "$d/call.rc")
  echo "==== ${names[$i]} (GPU ${gpus[$i]:-default}): call exit code $r"; cat "$d/call.out"
  [ "$rc" -ne 0 ] || rc=$r
done
if [ -n "$pick" ]; then
  shopt -s nullglob; st=("$tmp/$pick/$pick".state.*); shopt -u nullglob
  if [ ${#st[@]} -gt 0 ]; then
    if mv "${st[@]}" "$OUT/"; then echo "==== state of $pick: $(( ${#st[@]} - 1 )) chunk(s) in \$OUT"
    else echo "==== could not move the state of $pick into \$OUT"; [ "$rc" -ne 0 ] || rc=4; fi
  else echo "==== no state of $pick this call (see its output above)"; fi
fi
tar -C "$tmp" -czf "$OUT/many_$k.tgz" . || { echo "==== could not write \$OUT/many_$k.tgz"; [ "$rc" -ne 0 ] || rc=4; }
exit "$rc"
