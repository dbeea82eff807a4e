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

Gaze: iris localisation on the mp4's frames (decoded a second time, as `avatar track` does) and the
gaze fit on the tracked head, CPU s/frame, counted in the total.

Speed of the landmark stage without its networks: `avatar track`'s per-frame work around them (frame
decode from an mp4, crop, heatmap decoding, face following) with FAN and S3FD replaced by stubs of
no cost; the two networks' own cost (face-alignment's real architectures, random weights: the same
FLOPs) is timed separately, per frame (FAN in batches of 16, S3FD per frame at 256 px).

    python bench/bench_track.py                 # T = 90 frames, 1 torch thread
    python bench/bench_track.py --frames 30 --noise 2 --threads 2
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
from avatarcli.track.gaze import track_gaze  # noqa: E402
from avatarcli.track.pupils import ClipPupils  # noqa: E402


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


def landmark_speed(T: int) -> dict:
    """CPU s/frame of detect_clip with no-cost networks, and of the real FAN / S3FD architectures."""
    import tempfile

    import imageio.v3 as iio
    import torch
    from face_alignment.detection.sfd.net_s3fd import s3fd
    from face_alignment.models import FAN

    from avatarcli.landmarks.detect import LandmarkDetector
    from avatarcli.track.frames import open_frames
    from avatarcli.track.landmarks import detect_clip
    from avatarcli.track.pupils import locate_clip_pupils

    class NoFAN(torch.nn.Module):
        def forward(self, x):  # [B, 3, 256, 256] -> [B, 68, 64, 64], a peak per point
            hm = torch.zeros(x.shape[0], 68, 64, 64)
            hm[:, torch.arange(68), 20 + torch.arange(68) % 24, 20 + torch.arange(68) // 3] = 1.0
            return [hm]

    class NoSFD:
        def detect_from_image(self, rgb):
            return [np.array([60.0, 50.0, 200.0, 210.0, 0.99])]

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as d:
        video = Path(d) / "clip.mp4"
        iio.imwrite(video, rng.integers(0, 255, (T, 256, 256, 3), dtype=np.uint8), fps=30)
        src = open_frames(video)
        det = LandmarkDetector(NoFAN(), NoSFD(), torch.device("cpu"), "stub")
        clip, post = timed(lambda: detect_clip(src, det))
        _, iris = timed(lambda: locate_clip_pupils(src.frames(), clip.points, clip.lost))  # decodes again
    fan, sfd = FAN(4).eval(), s3fd().eval()
    with torch.no_grad():
        fan(torch.rand(2, 3, 256, 256))
        _, t_fan = timed(lambda: [fan(torch.rand(16, 3, 256, 256)) for _ in range(2)])
        _, t_sfd = timed(lambda: [sfd(torch.rand(1, 3, 256, 256)) for _ in range(4)])
    return {"post": post / T, "iris": iris / T, "fan": t_fan / 32, "sfd": t_sfd / 4}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=90)
    ap.add_argument("--noise", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the tests use 1)")
    a = ap.parse_args()
    import torch

    torch.set_num_threads(a.threads)
    model = make_synthetic_flame()
    size = (256, 256)
    rows = []
    gaze_cpu: list[float] = []
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
            if name == "track":
                seen = ClipPupils(clean[:, [36, 42]] + 1.0, np.ones((a.frames, 2)))  # any iris positions
                gaze_cpu.append(timed(lambda: track_gaze(model, fit, seen, 30.0))[1] / a.frames)
        rows.append((clip, "truth", {"jitter mm": sc.jitter_mm(sc.posed_vertices(model, truth))}, float("nan")))
    speed = landmark_speed(a.frames)
    keys = ["lmk px", "rot deg", "jaw deg", "face mm", "jitter mm", "lag fr", "fast yaw err deg"]
    print(f"T = {a.frames} frames, {size[1]}x{size[0]}, landmark noise {a.noise} px (machine shared: CPU time)")
    print(
        f"{'clip':7} {'method':12} " + " ".join(f"{k:>16}" for k in keys) + f" {'cpu s/frame':>12} {'frames/cpu-s':>12}"
    )
    for clip, name, m, spf in rows:
        vals = " ".join(f"{m.get(k, float('nan')):16.3f}" for k in keys)
        print(f"{clip:7} {name:12} {vals} {spf:12.3f} {1 / spf if spf == spf else float('nan'):12.1f}")
    fit_spf = float(np.mean([spf for _, name, _, spf in rows if name == "track"]))
    print(f"\nCPU seconds per frame ({a.threads} torch thread(s)):")
    print(f"  landmark stage without networks {speed['post']:.4f}  (decode mp4, follow, crop, heatmap decode)")
    print(f"  FLAME clip fit                  {fit_spf:.4f}")
    gaze_spf = speed["iris"] + float(np.mean(gaze_cpu))
    print(f"  gaze (iris in the frames + fit) {gaze_spf:.4f}  (a second decode of the mp4 included)")
    total = speed["post"] + fit_spf + gaze_spf
    print(f"  landmarks + fit + gaze          {total:.4f}  = {1 / total:.1f} frames/s (target >= 10)")
    print(f"  networks, reported apart: FAN {speed['fan']:.4f}, S3FD {speed['sfd']:.4f}")


if __name__ == "__main__":
    main()
