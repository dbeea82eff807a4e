#!/usr/bin/env bash
# Spread a large batch of photos over several GPUs or machines: the photo list is cut into
# N shards (photo i goes to shard i mod N); each shard is ONE `avatar reconstruct` call (models
# loaded once per shard) with its own work folder and JSON summary. Outputs go to one shared
# folder: names are unique, writes are atomic (temp file + rename in the same folder), and
# --skip-existing makes any shard safe to re-run or to re-queue after a crash.
#
# One machine, several GPUs (GNU parallel, one shard per GPU):
#   examples/batch_parallel.sh photos/ out/ 4 --flame ~/flame
# A cluster job array (SLURM; the same works with any scheduler that sets a task index):
#   sbatch --array=0-15 --gres=gpu:1 --wrap "examples/batch_parallel.sh photos/ out/ 16 --flame ~/flame"
#   (each array task runs only shard $SLURM_ARRAY_TASK_ID; for other schedulers set SHARD=k)
# Afterwards: failed photos are listed in out/summary-*.json; re-run the same command to retry
# them (finished heads are skipped).
set -euo pipefail
in=${1:?usage: batch_parallel.sh PHOTOS_DIR OUT_DIR [N_SHARDS] [avatar reconstruct options...]}
out=${2:?usage: batch_parallel.sh PHOTOS_DIR OUT_DIR [N_SHARDS] [avatar reconstruct options...]}
shift 2
if [[ ${1:-} =~ ^[0-9]+$ ]]; then n=$1; shift; else n=$(nvidia-smi -L 2>/dev/null | wc -l); fi
[ "${n:-0}" -ge 1 ] || n=1
mkdir -p "$out/shards"

# the photo list, sorted, the same on every machine (photos must be on a shared file system)
find "$in" -maxdepth 1 -type f \( -iname '*.jpg' -o -iname '*.jpeg' -o -iname '*.png' -o -iname '*.webp' \) | LC_ALL=C sort >"$out/shards/all.txt"

run_shard() {  # run_shard K N [options...]: photos K, K+N, K+2N, ... in one reconstruct call
  local k=$1 n=$2
  shift 2
  local list="$out/shards/shard-$k-of-$n.txt"
  awk -v n="$n" -v k="$k" '(NR - 1) % n == k' "$out/shards/all.txt" >"$list"
  [ -s "$list" ] || return 0
  local photos
  mapfile -t photos <"$list"
  local rc=0
  avatar --quiet reconstruct "${photos[@]}" -o "$out/" --workdir "$out/work-$k" --skip-existing --json "$@" \
    >"$out/summary-$k.json" || rc=$?
  # 1 = some photos of this shard failed (listed in its summary; a one-photo shard says 2 and
  # still writes the summary); otherwise 2 / 3 stop: bad options, no FLAME / weights / GPU
  if [ "$rc" -eq 1 ] || { [ "$rc" -eq 2 ] && [ -s "$out/summary-$k.json" ]; }; then
    echo "shard $k: some photos failed, see $out/summary-$k.json" >&2
    return 0
  fi
  return "$rc"
}
export -f run_shard
export out
export PARALLEL_SHELL=bash

if [ -n "${SLURM_ARRAY_TASK_ID:-${SHARD:-}}" ]; then
  run_shard "${SLURM_ARRAY_TASK_ID:-$SHARD}" "$n" "$@"  # one shard of a job array
else
  # one shard per GPU on this machine: parallel's slot number {%} picks the GPU
  seq 0 $((n - 1)) | parallel --line-buffer -j "$n" \
    'CUDA_VISIBLE_DEVICES=$(({%} - 1)) run_shard {} '"$n"' '"$(printf '%q ' "$@")"
fi
