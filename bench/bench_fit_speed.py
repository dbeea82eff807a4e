"""The input-view fit's CPU time against its quality on real portraits (issue 10: < 5 min per photo).

For each portrait, the pipeline's own init head and head region are made once (`avatar reconstruct
--steps 1` into a work folder, reused on later runs), then `denoise_head` (no diffusion) runs once
per variant of DenoiseConfig. Reported per variant, from the final head rendered by the photo's
camera at the working size and compared at the photo's size against the hand-drawn outline
(avatarcli.quality): head-region PSNR on white (and "inner": over the outline eroded by 4 px,
without the edge pixels where the photo mixes hair and backdrop), coverage, spill (the render and its residual
|render - photo| x 4 inside the outline are saved, and turntable frames at yaw 0/60/90/180); the fit's CPU seconds
(time.process_time of this process, torch on one thread by default: on a shared machine two
threads' spinning inflates CPU time several-fold; compare the ratio against the baseline, measured
in the same run) and the Gaussians at the end.

    python bench/bench_fit_speed.py --out /tmp/bfs --only astronaut obama_turned
    python bench/bench_fit_speed.py --out /tmp/bfs --variants old crop coarse50 --only astronaut
    python bench/bench_fit_speed.py --out /tmp/bfs --variants old-raster default default-again

Variant "old-raster" is the default settings with the torch rasterizer's compositing replaced by the one
it had before the row-segment rewrite (tests/reference_raster.py): the same fit, the old render cost.
"default-again" repeats "default"; the table says whether the two heads' PLY files are bit-identical.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from tests.reference_raster import use_reference  # noqa: E402

EDGE_PX = 4  # "inner PSNR": the outline eroded by this


def _variants() -> dict[str, dict]:
    """name -> DenoiseConfig overrides (fit: FitConfig overrides under the key 'fit')."""
    return {
        "default": {},
        "default-again": {},  # determinism: the same seed must give the same bits
        "old-raster": {"raster": "reference"},  # default settings, the compositing before the row-segment rewrite
        "old": {"steps": 200, "fit": {"crop_margin": None, "coarse_until": 0.0}},  # before issue 10's speed work
        "crop": {"fit": {"crop_margin": 0.06}},
        "coarse30": {"fit": {"coarse_until": 0.3}},
        "coarse50": {"fit": {"coarse_until": 0.5}},
        "steps100": {"steps": 100},
        "steps150": {"steps": 150},
        "steps300": {"steps": 300},
        "no-densify": {"fit": {"densify_every": 0}},
    }


def _config(over: dict):
    from avatarcli.stages.denoise import DenoiseConfig

    cfg = DenoiseConfig(rounds=0)
    fit_over = over.get("fit", {})
    cfg = dataclasses.replace(cfg, **{k: v for k, v in over.items() if k not in ("fit", "raster")})
    return dataclasses.replace(cfg, fit=dataclasses.replace(cfg.fit, **fit_over))


def _prepare(p, flame: Path, out: Path) -> Path:
    """The work folder of `p` with init.ply and head_region.png (made by reconstruct --steps 1)."""
    from avatarcli.cli import main

    work = out / "work"
    if not (work / p.name / "init.ply").exists():
        cmd = ["--quiet", "reconstruct", str(p.image_path), "-o", str(out / f"{p.name}.steps1.ply"), "--flame",
               str(flame), "--no-diffusion", "--detector", "auto", "--workdir", str(work), "--steps", "1"]  # fmt: skip
        t, c = time.perf_counter(), time.process_time()
        with contextlib.redirect_stdout(io.StringIO()):
            rc = main(cmd)
        if rc != 0:
            raise SystemExit(f"reconstruct --steps 1 failed ({rc}) for {p.name}")
        print(f"{p.name}: landmarks + fit-flame + head region + init: {time.perf_counter() - t:.0f} s wall, "
              f"{time.process_time() - c:.0f} s CPU")  # fmt: skip
    return work / p.name


def _figures(head, model, photo: np.ndarray, outline: np.ndarray, save: Path | None) -> dict:
    import torch
    from PIL import Image

    from avatarcli import quality
    from avatarcli.gaussians.binding import world_gaussians
    from avatarcli.render.api import render
    from avatarcli.render.camera import photo_camera, scaled_camera

    meta = head.meta
    verts, faces, _ = meta.canonical(model)
    cam = scaled_camera(photo_camera(meta.fit, torch.as_tensor(np.asarray(meta.root_joint))), 512, upscale=False)
    with torch.no_grad():
        out = render(world_gaussians(head.to_bound(verts, faces), verts, faces), cam, None, backend="torch")
    alpha = out.alpha[..., 0].clamp(0, 1).numpy()
    rgb = (out.rgb.clamp(0, 1) + (1 - out.alpha)).clamp(0, 1).numpy()  # on white
    H, W = outline.shape
    if alpha.shape != (H, W):
        alpha = np.asarray(Image.fromarray(alpha.astype(np.float32)).resize((W, H)))
        rgb = np.asarray(Image.fromarray((rgb * 255).round().astype(np.uint8)).resize((W, H))) / 255.0
    if save is not None:
        Image.fromarray((rgb * 255).round().astype(np.uint8)).save(save)
        res = np.abs(rgb - photo).mean(-1) * outline
        Image.fromarray((np.clip(res * 4, 0, 1) * 255).astype(np.uint8)).save(save.with_suffix(".residual.png"))
    return {
        "psnr": quality.region_psnr(rgb, photo, outline),
        # away from the outline's edge, whose pixels mix hair with the backdrop the render does not have
        "psnr_in": quality.region_psnr(rgb, photo, quality.interior(outline, margin=EDGE_PX)),
        "coverage": quality.coverage(alpha, outline),
        "spill": quality.spill(alpha, outline),
    }


def _turntable(head, path: Path) -> None:
    """The head written to `path` and rendered at yaw 0/60/90/180 (PATH_yaw<Y>.png, 256 px, on white)."""
    from avatarcli.cli import main
    from avatarcli.gaussians.ply import write_gaussian_ply

    write_gaussian_ply(path, head)
    cmd = ["--quiet", "render", str(path), "-o", str(path.with_suffix(".png")), "--flame", str(path.parent / "synthetic-flame"),
           "--yaw", "0,60,90,180", "--size", "256", "--background", "white"]  # fmt: skip
    with contextlib.redirect_stdout(io.StringIO()):
        if main(cmd) != 0:
            raise SystemExit(f"avatar render failed for {path}")


def _run(p, work: Path, model, name: str, over: dict, out: Path) -> dict:
    import torch

    from avatarcli.gaussians.ply import read_gaussian_ply
    from avatarcli.segment.head_region import read_region
    from avatarcli.stages.denoise import denoise_head

    rgb, outline = p.rgb(), p.outline()
    ply = read_gaussian_ply(work / "init.ply")
    region = read_region(work / "head_region.png", rgb.shape[:2])
    torch.manual_seed(0)
    c = time.process_time()
    t = time.perf_counter()
    with use_reference() if over.get("raster") == "reference" else contextlib.nullcontext():
        head, stats = denoise_head(ply, model, rgb, config=_config(over), mask=region)
    cpu, wall = time.process_time() - c, time.perf_counter() - t
    fig = _figures(head, model, rgb.astype(np.float64) / 255.0, outline, out / f"{p.name}.{name}.png")
    _turntable(head, out / f"{p.name}.{name}.ply")
    return {"portrait": p.name, "variant": name, "cpu": cpu, "wall": wall, "n": stats.n_gaussians, **fig}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--only", nargs="*", default=["astronaut", "obama_turned"])
    ap.add_argument("--variants", nargs="*", default=["old", "default"], help=f"of {', '.join(_variants())}")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1: CPU time is the work done, not threads spinning on a shared machine)",
    )
    args = ap.parse_args(argv)

    import torch

    from avatarcli.flame.loader import load_flame
    from avatarcli.testing.portraits import portrait
    from avatarcli.testing.synthetic_flame import write_synthetic_flame

    if args.threads:
        torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    flame = args.out / "synthetic-flame"
    if not flame.exists():
        write_synthetic_flame(flame)
    model = load_flame(flame)
    table = _variants()
    rows = []
    for name in args.only:
        p = portrait(name)
        work = _prepare(p, flame, args.out)
        for v in args.variants:
            rows.append(_run(p, work, model, v, table[v], args.out))
            r = rows[-1]
            print(f"  {r['portrait']} {v}: {r['cpu']:.0f} s CPU, PSNR {r['psnr']:.2f} dB (inner {r['psnr_in']:.2f}), "
                  f"coverage {r['coverage']:.3f}, spill {r['spill']:.3f}", flush=True)  # fmt: skip
    print(f"bench_fit_speed: input-view fit only (denoise, no diffusion), synthetic FLAME; load {_load()}")
    head = (f"{'portrait':<14}{'variant':<12}{'CPU s':>8}{'x base':>8}{'wall s':>8}{'PSNR dB':>9}{'inner':>7}{'cover':>7}"
            f"{'spill':>7}{'N':>7}")  # fmt: skip
    print(head + "\n" + "-" * len(head))
    for r in rows:
        base = next(b for b in rows if b["portrait"] == r["portrait"])
        print(f"{r['portrait']:<14}{r['variant']:<12}{r['cpu']:>8.0f}{r['cpu'] / base['cpu']:>8.2f}{r['wall']:>8.0f}"
              f"{r['psnr']:>9.2f}{r['psnr_in']:>7.2f}{r['coverage']:>7.3f}{r['spill']:>7.3f}{r['n']:>7d}")  # fmt: skip
    print("x base: CPU time over the first variant's on the same portrait, in this run; inner: PSNR over the "
          f"outline eroded by {EDGE_PX} px")  # fmt: skip
    for name in args.only:
        a, b = args.out / f"{name}.default.ply", args.out / f"{name}.default-again.ply"
        if "default" in args.variants and "default-again" in args.variants:
            same = a.read_bytes() == b.read_bytes()
            print(f"{name}: default and default-again heads (same seed) bit-identical: {'yes' if same else 'NO'}")
    return 0


def _load() -> str:
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "unknown"


if __name__ == "__main__":
    raise SystemExit(main())
