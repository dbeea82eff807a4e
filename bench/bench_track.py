"""`avatar track`: accuracy, smoothness, lag and speed of the clip fit (issue 16), on synthetic clips.

Setup: the synthetic FLAME-format model; clips from avatarcli.testing.synthetic_clip (one random
identity, smooth head yaw/pitch, a jaw that opens to 0.3 rad, an expression fading in and out, and
in the "fast" clip a 40 degree head turn within 4 frames), 256 x 256 frames, fit camera, landmarks
with `--noise` px Gaussian noise. Compared in the same run:

  track        track_flame (shared identity, temporal prior)
  independent  track_flame with smooth = 0: the same solver with every frame's motion fitted on its own
               (identity and camera still shared, so this baseline is already steadier than single-photo fits)

Figures: landmark error against the NOISE-FREE landmarks (px, mean over frames); head-rotation error
(R_global R_neck, degrees); jaw error (degrees); face error (vertices with the head pose removed, mm);
jitter = mean |v[t-1] - 2 v[t] + v[t+1]| of the posed vertices (mm; the truth's own value is the
floor); lag = the time shift (frames) that best aligns the tracked yaw with the truth, and the largest
yaw error in the fast turn. Speed: CPU seconds per frame of the fit (landmarks given, so no network),
and frames per CPU-second; the machine is shared, so CPU time (process_time) is what is reported.

    python bench/bench_track.py                 # T = 90 frames
    python bench/bench_track.py --frames 30 --noise 2
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from avatarcli.testing import synthetic_clip as sc  # noqa: E402
from avatarcli.testing.synthetic_flame import make_synthetic_flame  # noqa: E402
from avatarcli.track.fit import TrackConfig, TrackFit, track_flame  # noqa: E402


def evaluate(model, fit: TrackFit, truth, clean, fast: bool) -> dict:
    fp = sc.fit_params(fit)  # (fit-flame: its per-frame shapes averaged)
    Rf, Rt = sc.head_rotation(fp), sc.head_rotation(truth)
    yaw_f = np.degrees(np.arctan2(Rf[:, 0, 2], Rf[:, 2, 2]))
    yaw_t = np.degrees(np.arctan2(Rt[:, 0, 2], Rt[:, 2, 2]))
    proj = sc.posed_vertices(model, fp)
    uv_err = _landmark_error(model, fp, fit, clean)
    T = fit.n_frames
    mid = slice(T // 2 - 6, T // 2 + 6)
    return {
        "lmk px": uv_err,
        "rot deg": float(sc.rotation_error_deg(Rf, Rt).mean()),
        "jaw deg": float(np.degrees(np.abs(fit.jaw_pose[:, 0] - truth.jaw_pose[:, 0].numpy())).mean()),
        "face mm": float(
            np.linalg.norm(sc.face_vertices(model, fp) - sc.face_vertices(model, truth), axis=-1).mean() * 1000
        ),
        "jitter mm": sc.jitter_mm(proj),
        "lag fr": sc.best_lag(yaw_f, yaw_t),
        "fast yaw err deg": float(np.abs(yaw_f - yaw_t)[mid].max()) if fast else float("nan"),
    }


def _landmark_error(model, fp, fit, clean) -> float:
    from avatarcli.flame.forward import flame_forward
    from avatarcli.testing.synthetic_flame import project_fit_camera

    out = flame_forward(model.to(dtype=fp.shape.dtype), fp).landmarks
    uv = project_fit_camera(out, fit.focal_px, fit.image_size)
    return float(np.linalg.norm(uv - clean, axis=-1).mean())


def timed(fn):
    c0 = time.process_time()
    out = fn()
    return out, time.process_time() - c0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=90)
    ap.add_argument("--noise", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    model = make_synthetic_flame()
    size = (256, 256)
    rows = []
    for clip in ("smooth", "fast"):
        truth = sc.clip_params(a.frames, a.seed, fast_turn_deg=40.0 if clip == "fast" else 0.0)
        pts, clean = sc.clip_landmarks(model, truth, size, a.noise, a.seed)
        scores = np.ones(pts.shape[:2])
        runs = {
            "track": lambda: track_flame(model, pts, scores, size, 30.0),
            "independent": lambda: track_flame(model, pts, scores, size, 30.0, TrackConfig(smooth=0.0)),
        }
        for name, fn in runs.items():
            fit, cpu = timed(fn)
            rows.append((clip, name, evaluate(model, fit, truth, clean, clip == "fast"), cpu / a.frames))
        rows.append((clip, "truth", {"jitter mm": sc.jitter_mm(sc.posed_vertices(model, truth))}, float("nan")))
    keys = ["lmk px", "rot deg", "jaw deg", "face mm", "jitter mm", "lag fr", "fast yaw err deg"]
    print(f"T = {a.frames} frames, {size[1]}x{size[0]}, landmark noise {a.noise} px (machine shared: CPU time)")
    print(
        f"{'clip':7} {'method':12} " + " ".join(f"{k:>16}" for k in keys) + f" {'cpu s/frame':>12} {'frames/cpu-s':>12}"
    )
    for clip, name, m, spf in rows:
        vals = " ".join(f"{m.get(k, float('nan')):16.3f}" for k in keys)
        print(f"{clip:7} {name:12} {vals} {spf:12.3f} {1 / spf if spf == spf else float('nan'):12.1f}")


if __name__ == "__main__":
    main()
