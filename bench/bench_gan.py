"""The StyleGAN path (issue 12) on the CPU: inversion time per photo, and what `--prior gan` does
to the unseen sides.

HONEST NOTE: the real PanoHead weights cannot be obtained here (Google Drive only), so the GAN is
the tiny config (GanConfig.tiny(): 16 px output) with RANDOM weights. It does not look like a head;
its renders are smooth colour fields. The figures measure the machinery (time, that the rounds
pull the unseen sides to the GAN's views and keep the photo), not the prior's quality.

The photo is the synthetic FLAME head (avatarcli.testing.synthetic_photo) with its true fit; the
head region is the true alpha. Inversion: avatarcli.stages.invert_gan.invert_photo (the GAN crop
from the landmarks, the fit's camera in the GAN's convention, W-space steps then PTI steps, L2).

Table 1: CPU time (time.process_time) per inversion and per step, tiny config; with --panohead-step
also ONE W-space step of the full PanoHead-size generator (random weights, 512 px; slow).
Table 2: input-view fit only vs. + `--prior gan` rounds: colour noise (avatarcli.quality.colour_noise
over the render's interior) at canonical yaw 90 and 180, the mean |head - GAN render| there (where
both are opaque), and the input view's head-region PSNR. Turntable PNG (--save): rows = fit only,
fit + gan rounds, the GAN's own render (composited over white); yaw 0, 60, 90, 180.

    python bench/bench_gan.py                          # 96 px, 4000 Gaussians (a few CPU minutes)
    python bench/bench_gan.py --save /tmp/gan_turntable.png --panohead-step
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402


def _canonical(photo, yaw: float):
    d = photo.camera.position - photo.center
    return photo.orbit(yaw - math.degrees(math.atan2(float(d[0]), float(d[2]))))


def _table(header, rows) -> None:
    w = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    for r in [header, tuple("-" * x for x in w)] + rows:
        print("  ".join(str(s).ljust(w[i]) for i, s in enumerate(r)))


def _time_inversions(photo, G, args) -> tuple[object, list]:
    from avatarcli.gan.invert import InversionConfig
    from avatarcli.stages.invert_gan import invert_photo

    cfg = InversionConfig(w_steps=args.w_steps, pti_steps=args.pti_steps, w_avg_samples=256)
    region = photo.mask[..., 0].numpy()
    times, inv = [], None
    for _ in range(args.repeats):
        c0 = time.process_time()
        inv = invert_photo(G, photo.rgb, photo.landmarks, region, photo.fit, photo.model, cfg)
        times.append(time.process_time() - c0)
    assert inv is not None
    n = args.w_steps + args.pti_steps
    t = float(np.median(times))
    rows = [("tiny (16 px), L2", f"{args.w_steps} + {args.pti_steps}", f"{t:.2f}", f"{1000 * t / max(n, 1):.1f}",
             f"{inv.w_losses[0]:.4f} -> {inv.pti_losses[-1] if inv.pti_losses else inv.w_losses[-1]:.4f}")]  # fmt: skip
    if args.panohead_step:
        from avatarcli.gan.generator import GanConfig, TriplaneGenerator
        from avatarcli.gan.invert import invert

        torch.manual_seed(0)
        big = TriplaneGenerator(GanConfig.panohead())
        c0 = time.process_time()
        img = torch.zeros(1, 3, 512, 512)
        invert(
            big, img, torch.ones(1, 1, 512, 512), inv.camera, InversionConfig(w_steps=1, pti_steps=0, w_avg_samples=8)
        )
        tb = time.process_time() - c0
        rows.append(("PanoHead size (512 px), L2", "1 + 0", f"{tb:.1f}", f"{1000 * tb:.0f}", "(includes w_avg of 8 z)"))
    return inv, rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--n-gaussians", type=int, default=4000)
    ap.add_argument("--w-steps", type=int, default=100)
    ap.add_argument("--pti-steps", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--steps", type=int, default=100, help="input-view fit steps")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--round-steps", type=int, default=50)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--panohead-step", action="store_true", help="time one step of the full-size generator")
    ap.add_argument("--save", type=Path, default=None, help="turntable PNG")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from avatarcli.gan.generator import GanConfig, TriplaneGenerator
    from avatarcli.gan.prior import GanPrior
    from avatarcli.gaussians.init import InitConfig, init_gaussians
    from avatarcli.quality import colour_noise, interior, region_psnr
    from avatarcli.render.api import render
    from avatarcli.stages.denoise import DenoiseConfig, denoise_head
    from avatarcli.testing.synthetic_flame import make_synthetic_flame
    from avatarcli.testing.synthetic_photo import make_synthetic_photo

    model = make_synthetic_flame()
    photo = make_synthetic_photo(model, size=args.size)
    torch.manual_seed(0)
    G = TriplaneGenerator(replace(GanConfig.tiny(), density_shift=2.0))
    inv, t_rows = _time_inversions(photo, G, args)
    print(f"bench_gan 1/2: inversion on the CPU ({torch.get_num_threads()} thread; shared, loaded machine), "
          f"median of {args.repeats}; RANDOM tiny weights (not a head)")  # fmt: skip
    _table(("generator", "W + PTI steps", "CPU s / photo", "CPU ms / step", "loss first -> last"), t_rows)

    prior = GanPrior(inv)
    init = init_gaussians(model, photo.fit, photo.rgb, InitConfig(n_gaussians=args.n_gaussians))
    mask = photo.mask[..., 0].numpy()
    base_cfg = DenoiseConfig(steps=args.steps, rounds=0, device="cpu", max_side=args.size, backend="torch")
    gan_cfg = replace(base_cfg, rounds=args.rounds, round_steps=args.round_steps)
    c0 = time.process_time()
    base, s0 = denoise_head(init, model, photo.rgb, config=base_cfg, mask=mask)
    c1 = time.process_time()
    head, s1 = denoise_head(init, model, photo.rgb, config=gan_cfg, mask=mask, denoiser=prior)
    c2 = time.process_time()
    white = torch.ones(3)

    def view(ply, cam):
        with torch.no_grad():
            out = render(ply.gaussians, cam, white, backend="torch")
        return out.rgb.clamp(0, 1).numpy(), out.alpha[..., 0].numpy()

    rows = []
    for yaw in (90.0, 180.0):
        cam = _canonical(photo, yaw)
        g_rgb, g_a = (t[0].numpy() for t in prior.render([cam]))
        cells = []
        for ply in (base, head):
            rgb, a = view(ply, cam)
            both = (a > 0.5) & (g_a[..., 0] > 0.5)
            gap = float(np.abs(rgb - g_rgb)[both].mean()) if both.any() else float("nan")
            cells.append((colour_noise(rgb, interior(a > 0.5)), gap))
        rows.append((f"colour noise yaw {yaw:.0f}", f"{cells[0][0]:.4f}", f"{cells[1][0]:.4f}",
                     f"{cells[1][0] / cells[0][0]:.2f}x"))  # fmt: skip
        rows.append((f"|head - GAN| yaw {yaw:.0f}", f"{cells[0][1]:.4f}", f"{cells[1][1]:.4f}",
                     f"{cells[1][1] / cells[0][1]:.2f}x"))  # fmt: skip
    region = mask > 0.5
    p0, p1 = (region_psnr(_over(p, photo), photo.image.numpy(), region) for p in (base, head))
    rows.append(("input view PSNR (head region), dB", f"{p0:.2f}", f"{p1:.2f}", f"{p1 - p0:+.2f} dB"))
    rows.append(("CPU s (fit / fit + rounds)", f"{c1 - c0:.0f}", f"{c2 - c1:.0f}", f"{(c2 - c1) / (c1 - c0):.2f}x"))
    print(f"\nbench_gan 2/2: {args.size} px synthetic photo, {init.gaussians.n} Gaussians, {args.steps} fit steps; "
          f"--prior gan: {args.rounds} rounds x {args.round_steps} steps (yaws {gan_cfg.yaws})")  # fmt: skip
    _table(("metric", "fit only", "+ gan rounds", "gan / fit"), rows)
    if args.save:
        from PIL import Image

        cams = [_canonical(photo, y) for y in (0.0, 60.0, 90.0, 180.0)]
        grid = [np.concatenate([view(p, c)[0] for c in cams], 1) for p in (base, head)]
        g = [prior.render([c]) for c in cams]
        grid.append(np.concatenate([(a[0] * r[0] + (1 - a[0])).numpy() for r, a in g], 1))
        Image.fromarray((np.concatenate(grid, 0) * 255 + 0.5).astype(np.uint8)).save(args.save)
        print(f"turntable (rows: fit only / + gan rounds / the GAN; yaw 0, 60, 90, 180): {args.save}")
    return 0


def _over(ply, photo) -> np.ndarray:
    """The head over the photo's backdrop at the photo camera (as denoise's input-view figure)."""
    from avatarcli.render.api import render

    with torch.no_grad():
        out = render(ply.gaussians, photo.camera, torch.tensor(photo.background), backend="torch")
    return out.rgb.clamp(0, 1).numpy()


if __name__ == "__main__":
    sys.exit(main())
