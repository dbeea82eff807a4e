#!/usr/bin/env bash
# Reconstruct every photo in a folder and render a turntable of each head.
#   examples/reconstruct_folder.sh photos/ out/ [more `avatar reconstruct` options, e.g. --flame ~/flame]
# FLAME comes from --flame or $AVATAR_FLAME. Intermediate artifacts go to out/work/NAME/, so a
# re-run resumes where it stopped; heads already in out/ are skipped, turntables already newer
# than their head are not rendered again. FRAMES=90 and SIZE=512 set the turntables.
set -euo pipefail
shopt -s nullglob
in=${1:?usage: reconstruct_folder.sh PHOTOS_DIR OUT_DIR [avatar reconstruct options...]}
out=${2:?usage: reconstruct_folder.sh PHOTOS_DIR OUT_DIR [avatar reconstruct options...]}
shift 2
mkdir -p "$out"

# exit code 1: some photos failed (listed with their error in summary.json); the others are done.
# 2 (bad arguments) or 3 (FLAME / weights / GPU missing: run `avatar doctor`) stop here.
rc=0
avatar reconstruct "$in" -o "$out/" --workdir "$out/work" --skip-existing --json "$@" >"$out/summary.json" || rc=$?
if [ "$rc" -gt 1 ]; then
  echo "avatar reconstruct stopped with exit code $rc" >&2
  exit "$rc"
fi

for ply in "$out"/*.ply; do
  mp4="${ply%.ply}.mp4"
  if [ -e "$mp4" ] && [ "$mp4" -nt "$ply" ]; then continue; fi
  avatar render "$ply" -o "$mp4" --frames "${FRAMES:-90}" --size "${SIZE:-512}"
done

if [ "$rc" -eq 1 ]; then
  echo "some photos failed, see $out/summary.json:" >&2
  python3 - "$out/summary.json" <<'PY' || true
import json, sys
for r in json.load(open(sys.argv[1]))["images"]:
    if r["status"] == "failed":
        print(f"  {r['name']}: {r['error']}", file=sys.stderr)
PY
fi
exit "$rc"
