"""Mouth interior (issue 16): what a jaw-open frame shows between the lips, with and without the
interior Gaussians, and whether a closed mouth changes, from the front to the side. Torch
rasterizer, CPU.

Setup: the synthetic FLAME with a lip slit (avatarcli.testing.synthetic_mouth), a synthetic photo
(frontal, mouth closed), init_gaussians (n = 20000; 4 % of them the mouth, the default) and the same
surface samples without the mouth (--no-mouth); both posed by animate's HeadPoser (the interior is
rigid with the skull and jaw joints) at jaw 0 and jaw 0.3 rad. Figures: mean luminance inside the
opening between the lips (the slit's outline, eroded 1 px) against the skin's median luminance; the
share of dark (< 0.25) pixels there; for the closed mouth at yaw 0 / 45 / 90 the PSNR of the head with
the interior against the head without it, and the largest per-pixel change. Writes the renders to --png.
Targets: open mouth inside <= 0.7 x skin luminance; closed mouth at every yaw: largest per-pixel change
<= 1/255 (no teeth through the lip slit; the interior fades in with the lip opening, see
avatarcli.gaussians.mouth.interior_visibility; before the fade it was 0.24 at yaw 0).
Still render (`avatar render`'s stage, the photo camera): the closed-mouth head as written now (head.ply
version 4, the lip state stored: the interior gated) and as written before (version 3: drawn as
stored), each against the head without the interior: largest pixel change in the lips' box, and the
pixels there that are teeth-coloured (closer to the teeth colour than the plain head's pixel, by 0.02).
Target: version 4 <= 1/255 and no teeth-coloured pixel.

    python bench/bench_mouth.py --png mouth.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from avatarcli.animate.pose import HeadPoser  # noqa: E402
from avatarcli.animate.sequence import FrameSequence  # noqa: E402
from avatarcli.gaussians.init import InitConfig, init_gaussians, init_with_details  # noqa: E402
from avatarcli.render.api import render  # noqa: E402
from avatarcli.render.camera import orbit_camera  # noqa: E402
from avatarcli.testing.synthetic_mouth import make_synthetic_flame_with_mouth, slit_outline  # noqa: E402
from avatarcli.testing.synthetic_photo import make_synthetic_photo  # noqa: E402

YAWS = (0.0, 45.0, 90.0)


def _frame(model, jaw: float) -> FrameSequence:
    z = lambda k: np.zeros((1, k), np.float32)  # noqa: E731
    jp = z(3)
    jp[0, 0] = jaw
    return FrameSequence(expr=z(model.exprdirs.shape[-1]), jaw_pose=jp, neck_pose=z(3), eyes_pose=z(6),
                         global_pose=z(3), translation=z(3), fps=25.0, clip=np.zeros(1, np.int64))  # fmt: skip


def main() -> None:
    import cv2

    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--png", type=Path, default=None)
    a = ap.parse_args()
    S = a.size
    model = make_synthetic_flame_with_mouth()
    photo = make_synthetic_photo(model, size=96, yaw_deg=0.0, pitch_deg=0.0, jaw_open=0.0, expr_scale=0.0)
    ply, info = init_with_details(model, photo.fit, photo.rgb, InitConfig(n_gaussians=20000))
    ns = int(info.points.shape[0])
    plain = init_gaussians(model, photo.fit, photo.rgb, InitConfig(n_gaussians=ns, mouth_fraction=0.0))
    posers = {"no mouth": HeadPoser.from_ply(model, plain), "mouth": HeadPoser.from_ply(model, ply)}
    cam = lambda yaw: orbit_camera(yaw, 0, distance=0.3, target=(0, -0.035, 0.06), fov_deg=20, width=S, height=S)  # noqa: E731

    def shot(k: str, jaw: float, yaw: float = 0.0) -> np.ndarray:
        g = next(posers[k].posed(_frame(model, jaw)))
        return render(g, cam(yaw), torch.ones(3), backend="torch").rgb.numpy()

    ims = {(k, j, y): shot(k, j, y) for k in posers for j in (0.0, 0.3) for y in YAWS}
    v1 = posers["mouth"].vertices(_frame(model, 0.3))[0, : model.v_template.shape[0]]
    mask = np.zeros((S, S), np.uint8)
    cv2.fillPoly(mask, [np.round(cam(0.0).project(slit_outline(v1)).numpy()).astype(np.int32)], 1)
    mask = cv2.erode(mask, np.ones((3, 3), np.uint8)) > 0
    c = slice(int(0.2 * S), int(0.8 * S))
    skin = float(np.median(ims[("no mouth", 0.0, 0.0)][c, c].mean(-1)))
    print(f"mouth Gaussians: {ply.gaussians.n - ns} of {ply.gaussians.n}; opening: {int(mask.sum())} px at "
          f"{S}x{S}; skin luminance {skin:.3f}")  # fmt: skip
    print(f"{'head':9} {'open: lum inside':>17} {'x skin':>7} {'dark share':>11}"
          + "".join(f" {f'closed yaw {y:.0f}: PSNR / max':>26}" for y in YAWS))  # fmt: skip
    for k in posers:
        lum = ims[(k, 0.3, 0.0)][mask].mean(-1)
        row = f"{k:9} {lum.mean():17.3f} {lum.mean() / skin:7.2f} {(lum < 0.25).mean():11.2f}"
        for y in YAWS:
            d = ims[(k, 0.0, y)] - ims[("no mouth", 0.0, y)]
            mse = float((d**2).mean())
            psnr = "inf" if mse == 0 else f"{10 * np.log10(1 / mse):.1f} dB"
            row += f" {psnr + f' / {np.abs(d).max():.3f}':>26}"
        print(row)
    worst = max(float(np.abs(ims[("mouth", 0.0, y)] - ims[("no mouth", 0.0, y)]).max()) for y in YAWS)
    lum = float(ims[("mouth", 0.3, 0.0)][mask].mean(-1).mean()) / skin
    print(
        f"targets: open inside {lum:.2f} x skin (<= 0.70: {'met' if lum <= 0.7 else 'MISSED'}); closed max change "
        f"{worst:.4f} (<= {1 / 255:.4f}: {'met' if worst <= 1 / 255 else 'MISSED'})"
    )
    still_render_rows(model, ply, plain)
    if a.png is not None:
        import imageio.v3 as iio

        grid = [np.concatenate([ims[(k, j, y)] for y in YAWS], 1) for j in (0.0, 0.3) for k in posers]
        iio.imwrite(a.png, (np.concatenate(grid, 0).clip(0, 1) * 255).astype(np.uint8))


def still_render_rows(model, ply, plain) -> None:
    """The render stage's photo view of the closed head: gated (v4) and as stored (v3) against no mouth."""
    import dataclasses
    import os
    import tempfile

    from avatarcli.flame.forward import flame_forward
    from avatarcli.gaussians.mouth import MouthConfig
    from avatarcli.render.camera import photo_camera
    from avatarcli.stages.render import RenderConfig, iter_frames, plan_render

    os.environ.pop("AVATAR_FLAME", None)
    old = dataclasses.replace(ply, meta=dataclasses.replace(ply.meta, lip_opening=None, rest_lip_opening=None))
    meta = ply.meta
    lm = flame_forward(model, meta.fit.canonical_params(model)).landmarks[0, 48:]
    uv = photo_camera(meta.fit, meta.root_joint).project(lm).numpy()
    (x0, y0), (x1, y1) = np.floor(uv.min(0)).astype(int) - 2, np.ceil(uv.max(0)).astype(int) + 2
    with tempfile.TemporaryDirectory() as tmp:

        def still(p):
            plan = plan_render(p, Path(tmp) / "v.png", RenderConfig(camera="photo", backend="torch"))
            return next(iter_frames(plan)).astype(np.float64)[y0:y1, x0:x1] / 255.0

        ref = still(plain)
        teeth = np.asarray(MouthConfig().teeth_rgb)
        dist = lambda im: np.linalg.norm(im - teeth, axis=-1)  # noqa: E731
        print(f"still render (photo camera, lips' box {x1 - x0}x{y1 - y0} px), closed mouth, against no mouth:")
        for name, head in (("head.ply v4 (gated)", ply), ("head.ply v3 (as stored)", old)):
            im = still(head)
            n = int((dist(im) < dist(ref) - 0.02).sum())
            print(f"  {name:24} max change {np.abs(im - ref).max():.4f}, teeth-coloured pixels {n}")


if __name__ == "__main__":
    main()
