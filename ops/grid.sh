#!/usr/bin/env bash
# `make grid`: one queued DVC experiment per arch x loss x seed, named
# <arch>-<loss>-s<seed> (the MLflow run takes the same name), run JOBS at a
# time by `dvc queue start`; waits, printing progress, then shows the grid.
# GRID_SET adds the same overrides to every experiment ("-S train.steps=2000").
set -euo pipefail
# ARCHS and LOSSES default to every name the registries hold.
: "${ARCHS:=$(python -m pipeline.archs)}" "${LOSSES:=$(python -m pipeline.losses)}"
: "${SEEDS:?}" "${JOBS:=2}" "${GRID_SET:=}"

names=()
for arch in $ARCHS; do
  for loss in $LOSSES; do
    for seed in $SEEDS; do
      name="$arch-$loss-s$seed"
      # shellcheck disable=SC2086  # GRID_SET is a list of words on purpose
      dvc exp run --queue -n "$name" -S "train.arch=$arch" -S "train.loss=$loss" -S "train.seed=$seed" $GRID_SET
      names+=("$name")
    done
  done
done
dvc queue start -j "$JOBS"

count() {  # how many of the grid's experiments the queue lists with status $1
  printf '%s\n' "$status" | awk -v want="$1" -v names="${names[*]}" '
    BEGIN { split(names, n, " "); for (i in n) ours[n[i]] = 1 }
    ($2 in ours) && $NF == want { c++ } END { print c + 0 }'
}
start=$(date +%s)
last=""
while :; do
  status=$(dvc queue status 2>/dev/null || true)
  queued=$(count Queued); running=$(count Running); done_=$(count Success); failed=$(count Failed)
  line="grid: ${#names[@]} experiments: $running running, $queued queued, $done_ done, $failed failed"
  if [ "$line" != "$last" ]; then
    echo "$line ($(( ($(date +%s) - start) / 60 )) min)"
    last=$line
  fi
  [ $((queued + running)) -eq 0 ] && break
  sleep 10
done
dvc exp show --only-changed --no-pager || true
if [ "$failed" -gt 0 ]; then
  echo "grid: $failed failed; see dvc queue logs <name>" >&2
  exit 1
fi
