#!/usr/bin/env bash
# `make grid`: one queued DVC experiment per arch x loss x seed, named
# <arch>-<loss>-s<seed> (the MLflow run takes the same name), run JOBS at a
# time by `dvc queue start`; waits, printing progress, then shows the grid.
# GRID_SET adds the same overrides to every experiment ("-S train.steps=2000").
set -euo pipefail
# ARCHS and LOSSES default to every name the registries hold.
: "${ARCHS:=$(python -m pipeline.archs)}" "${LOSSES:=$(python -m pipeline.losses)}"
: "${SEEDS:?}" "${JOBS:=2}" "${GRID_SET:=}"
# With more than one worker, DVC's queue sometimes fails an experiment before any of
# its stages runs (treeverse/dvc#10673): such an experiment is queued again, up to
# SETUP_RETRIES times. A stage's own failure is never retried.
SETUP_RETRIES=${SETUP_RETRIES:-2}

declare -A sets=()
names=()
for arch in $ARCHS; do
  for loss in $LOSSES; do
    for seed in $SEEDS; do
      name="$arch-$loss-s$seed"
      sets[$name]="-S train.arch=$arch -S train.loss=$loss -S train.seed=$seed $GRID_SET"
      names+=("$name")
    done
  done
done

enqueue() {  # queue the named experiments
  local name
  for name in "$@"; do
    # shellcheck disable=SC2086  # a list of words on purpose
    dvc exp run --queue -n "$name" ${sets[$name]}
  done
}

count() {  # how many of the grid's experiments the queue lists with status $1
  printf '%s\n' "$status" | awk -v want="$1" -v names="${names[*]}" '
    BEGIN { split(names, n, " "); for (i in n) ours[n[i]] = 1 }
    ($2 in ours) && $NF == want { c++ } END { print c + 0 }'
}

start=$(date +%s)
drain() {  # start the workers and wait until none of the grid is queued or running
  local last=""
  dvc queue start -j "$JOBS"
  while :; do
    status=$(dvc queue status 2>/dev/null || true)
    queued=$(count Queued); running=$(count Running); done_=$(count Success); failed=$(count Failed)
    line="grid: ${#names[@]} experiments: $running running, $queued queued, $done_ done, $failed failed"
    if [ "$line" != "$last" ]; then
      echo "$line ($(( ($(date +%s) - start) / 60 )) min)"
      last=$line
    fi
    [ $((queued + running)) -eq 0 ] && return
    sleep 10
  done
}

enqueue "${names[@]}"
for attempt in $(seq 0 "$SETUP_RETRIES"); do
  drain
  [ "$failed" -eq 0 ] && break
  again=()
  for name in "${names[@]}"; do
    printf '%s\n' "$status" | awk -v n="$name" '$2 == n && $NF == "Failed" { f = 1 } END { exit !f }' || continue
    log=$(dvc queue logs "$name" 2>&1 || true)
    if [ "$attempt" -lt "$SETUP_RETRIES" ] && [[ $log == *"failed during setup"* ]]; then
      again+=("$name")
    fi
  done
  [ "${#again[@]}" -eq 0 ] && break
  echo "grid: ${again[*]}: failed before any stage ran (DVC's queue); queued again"
  dvc queue remove "${again[@]}" >/dev/null
  enqueue "${again[@]}"
done

dvc exp show --only-changed --no-pager || true
if [ "$failed" -gt 0 ]; then
  # The end of each failed experiment's log, so the reason is on screen (and in CI's output).
  for name in "${names[@]}"; do
    printf '%s\n' "$status" | awk -v n="$name" '$2 == n && $NF == "Failed" { f = 1 } END { exit !f }' || continue
    echo "grid: $name failed; the end of \`dvc queue logs $name\`:" >&2
    dvc queue logs "$name" 2>&1 | tail -n 40 | sed 's/^/  /' >&2 || true
  done
  echo "grid: $failed failed; see dvc queue logs <name>" >&2
  exit 1
fi
