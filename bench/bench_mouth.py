"""Mouth interior (issue 16): what a jaw-open frame shows between the lips, with and without the
interior Gaussians, and whether a closed mouth changes. Torch rasterizer, CPU.

Setup: the synthetic FLAME with a lip slit (avatarcli.testing.synthetic_mouth), a synthetic photo
(frontal, mouth closed), init_gaussians (n = 20000, 4 % of them the mouth); the head rendered from
the front at jaw 0 and jaw 0.3 rad, once with every Gaussian and once with the surface samples only
(the head as init made it before the mouth existed). Figures: mean luminance inside the opening
between the lips (the slit's outline, eroded 1 px) against the skin's median luminance; the share of
dark (< 0.25) pixels there; the mean absolute change of a closed-mouth render over the image and
over the mouth area. Writes the four renders side by side to --png.

    python bench/bench_mouth.py --png mouth.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from avatarcli.flame.forward import flame_forward  # noqa: E402
from avatarcli.flame.params import FlameParams  # noqa: E402
from avatarcli.gaussians.binding import bind_to_mesh, world_gaussians  # noqa: E402
from avatarcli.gaussians.init import InitConfig, init_gaussians  # noqa: E402
from avatarcli.render.api import render  # noqa: E402
from avatarcli.render.camera import orbit_camera  # noqa: E402
from avatarcli.testing.synthetic_mouth import make_synthetic_flame_with_mouth, slit_outline  # noqa: E402
from avatarcli.testing.synthetic_photo import make_synthetic_photo  # noqa: E402


def main() -> None:
    import cv2

    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--png", type=Path, default=None)
    a = ap.parse_args()
    S = a.size
    model = make_synthetic_flame_with_mouth()
    photo = make_synthetic_photo(model, size=96, yaw_deg=0.0, pitch_deg=0.0, jaw_open=0.0, expr_scale=0.0)
    info: dict = {}
    ply = init_gaussians(model, photo.fit, photo.rgb, InitConfig(n_gaussians=20000, mouth_fraction=0.04), info=info)
    faces = model.faces.long()
    full = bind_to_mesh(ply.gaussians, ply.binding, photo.vertices, faces)
    plain = full.subset(torch.arange(info["points"].shape[0]))
    cam = orbit_camera(0, 0, distance=0.3, target=(0, -0.035, 0.06), fov_deg=20, width=S, height=S)

    def posed(jaw):
        p = FlameParams.zeros(1, int(np.asarray(photo.fit.shape).size), 0)
        p.shape = torch.as_tensor(np.asarray(photo.fit.shape), dtype=torch.float32)[None]
        p.jaw_pose[0, 0] = jaw
        return flame_forward(model, p, with_landmarks=False).vertices[0]

    shot = lambda b, v: render(world_gaussians(b, v, faces), cam, torch.ones(3), backend="torch").rgb.numpy()  # noqa: E731
    v0, v1 = posed(0.0), posed(0.3)
    ims = {(k, j): shot(b, v) for k, b in (("before", plain), ("mouth", full)) for j, v in ((0.0, v0), (0.3, v1))}
    mask = np.zeros((S, S), np.uint8)
    cv2.fillPoly(mask, [np.round(cam.project(slit_outline(v1)).numpy()).astype(np.int32)], 1)
    mask = cv2.erode(mask, np.ones((3, 3), np.uint8)) > 0
    c = slice(int(0.2 * S), int(0.8 * S))
    skin = float(np.median(ims[("before", 0.0)][c, c].mean(-1)))
    print(
        f"mouth Gaussians: {full.n - plain.n} of {full.n}; opening: {int(mask.sum())} px at {S}x{S}; skin luminance {skin:.3f}"
    )
    print(
        f"{'head':8} {'open: lum inside':>17} {'x skin':>8} {'dark share':>11} {'closed: mean |change|':>22} {'mouth area':>11}"
    )
    for k in ("before", "mouth"):
        lum = ims[(k, 0.3)][mask].mean(-1)
        d = np.abs(ims[(k, 0.0)] - ims[("before", 0.0)]).mean(-1)
        mouth_area = d[int(0.42 * S) : int(0.78 * S), int(0.26 * S) : int(0.74 * S)].mean()
        print(
            f"{k:8} {lum.mean():17.3f} {lum.mean() / skin:8.2f} {(lum < 0.25).mean():11.2f} {d.mean():22.4f} {mouth_area:11.4f}"
        )
    if a.png is not None:
        import imageio.v3 as iio

        row = np.concatenate([ims[k] for k in [("before", 0.0), ("mouth", 0.0), ("before", 0.3), ("mouth", 0.3)]], 1)
        iio.imwrite(a.png, (row.clip(0, 1) * 255).astype(np.uint8))


if __name__ == "__main__":
    main()
