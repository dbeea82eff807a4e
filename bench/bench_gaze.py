"""`avatar track`'s gaze (issue 16): eyes_pose from the irises, on a synthetic clip of known gaze.

Setup: avatarcli.testing.synthetic_eyes: the synthetic FLAME head (smooth head motion, jaw, expression)
rendered by the project's torch rasterizer, with ray-traced eyeballs turned by known eyes_pose (yaw
sinusoid of --amp degrees, pitch of half that), `--closed` blink frames, 256 x 256, the fit camera.
The head is tracked from its landmarks (+1 px noise) by track_flame; the irises are located in the
frames (avatarcli.track.pupils) and eyes_pose fitted (avatarcli.track.gaze). Compared in the same run:

  tracked   the gaze fitted on the tracked head (what `avatar track` does)
  true head the gaze fitted on the true head motion (localisation error alone)
  zero      eyes_pose 0 (what `avatar track` wrote before: the baseline)

Figures: gaze direction error (degrees, mean and 90th percentile over frames and eyes, world space);
iris centre error (px, against the projected true iris); CPU seconds per frame of iris localisation
+ gaze fit (the machine is shared: process_time).

    python bench/bench_gaze.py                  # T = 30 frames
    python bench/bench_gaze.py --frames 60 --amp 25
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from avatarcli.testing import synthetic_clip as sc  # noqa: E402
from avatarcli.testing.synthetic_eyes import gaze_clip_params, render_gaze_frames  # noqa: E402
from avatarcli.testing.synthetic_flame import make_synthetic_flame  # noqa: E402
from avatarcli.track import gaze as G  # noqa: E402
from avatarcli.track.fit import track_flame  # noqa: E402
from avatarcli.track.pupils import locate_clip_pupils  # noqa: E402


def angles(rig, theta, truth) -> np.ndarray:
    a, b = G.gaze_directions(rig, theta), G.gaze_directions(rig, truth)
    return np.degrees(np.arccos(np.clip((a * b).sum(-1).numpy(), -1.0, 1.0))).ravel()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=30)
    ap.add_argument("--amp", type=float, default=20.0, help="gaze yaw amplitude, degrees")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(1)
    model = make_synthetic_flame(dtype=torch.float64)
    size = (256, 256)
    focal = 1.2 * 256
    T = a.frames
    p = gaze_clip_params(T, a.seed, amp_deg=a.amp)
    closed = tuple(range(T // 3, T // 3 + 3))
    frames, lmk = render_gaze_frames(model, p, size, closed=closed)
    noisy = lmk + np.random.default_rng(a.seed).normal(0, 1.0, lmk.shape)
    fit = track_flame(model, noisy, np.ones(lmk.shape[:2]), size, 30.0)
    c0 = time.process_time()
    pupils = locate_clip_pupils(iter(frames), noisy)
    gz = G.track_gaze(model, fit, pupils, 30.0)
    cpu = (time.process_time() - c0) / T
    truth_theta = torch.stack([p.eyes_pose[:, 3:5], p.eyes_pose[:, 0:2]], 1).double()  # image's eye order
    rig_true = G.eye_rig(model, p)
    gz_true = G.fit_gaze(rig_true, pupils.xy, pupils.confidence, focal, size, 30.0)
    true_uv = G.project(G.iris_world(rig_true, truth_theta), focal, size).numpy()
    seen = np.setdiff1d(np.arange(T), closed)
    loc = np.linalg.norm(pupils.xy[seen] - true_uv[seen], axis=-1)
    rows = {
        "tracked": angles(rig_true, torch.from_numpy(gz.theta), truth_theta),
        "true head": angles(rig_true, torch.from_numpy(gz_true.theta), truth_theta),
        "zero": angles(rig_true, torch.zeros_like(truth_theta), truth_theta),
    }
    rot = sc.rotation_error_deg(sc.head_rotation(sc.fit_params(fit)), sc.head_rotation(p)).mean()
    print(f"T = {T} frames 256x256, gaze yaw +-{a.amp:g} deg, pitch +-{a.amp / 2:g}, blinks at {list(closed)}")
    print(f"head rotation error of the track: {rot:.2f} deg (machine shared: CPU time)")
    print(f"{'gaze':10} {'mean deg':>9} {'p90 deg':>8} {'blink frames deg':>17}")
    for name, e in rows.items():
        blink = e.reshape(T, 2)[list(closed)].mean()
        print(f"{name:10} {e.mean():9.2f} {np.percentile(e, 90):8.2f} {blink:17.2f}")
    print(f"iris centre error: median {np.median(loc):.2f} px, p90 {np.percentile(loc, 90):.2f} px (seen frames)")
    print(
        f"confidence: seen frames min {pupils.confidence[seen].min():.2f}, blinks max {pupils.confidence[list(closed)].max():.2f}"
    )
    print(f"CPU s/frame, iris localisation + gaze fit: {cpu:.4f}")


if __name__ == "__main__":
    main()
