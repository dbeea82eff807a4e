#!/usr/bin/env bash
# Reconstruct every photo in a folder and render a turntable of each head.
#   examples/reconstruct_folder.sh photos/ out/        (FLAME from $AVATAR_FLAME)
# Intermediate artifacts go to out/work/NAME/, so a re-run resumes where it stopped.
set -euo pipefail
in=${1:?usage: reconstruct_folder.sh PHOTOS_DIR OUT_DIR}
out=${2:?usage: reconstruct_folder.sh PHOTOS_DIR OUT_DIR}
mkdir -p "$out"
# exit code 1 means some photos failed (listed in summary.json); the others are done
avatar reconstruct "$in" -o "$out/" --workdir "$out/work" --skip-existing --json >"$out/summary.json" || [ $? -eq 1 ]
for ply in "$out"/*.ply; do
  avatar render "$ply" -o "${ply%.ply}.mp4" --frames 90
done
