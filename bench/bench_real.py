"""Real portraits, offline, defaults (issue 9): head region, coverage, spill, PSNR, unseen-side noise.

For each portrait of avatarcli.testing.portraits (real photos with hand-drawn head outlines), the
whole offline pipeline runs as a user would run it without hub weights:

    avatar reconstruct PHOTO -o head.ply --no-diffusion --detector auto --workdir W   (dlib landmarks
    when FAN's weights are missing; the weight-free head region of avatarcli.segment.head_region)

then the head is rendered with `avatar render` from the photo's camera and at yaw 0/60/90/180.
Alpha is recovered exactly from two renders, over black and over white (C = premultiplied + (1 - a) bg).

Reported per portrait (all from avatarcli.quality):
  * region IoU: the head region the run used (head_region.png) vs the drawn outline (goal >= 0.9);
  * coverage / spill of the fitted head from the photo's camera against the drawn outline
    (issue 10's targets: >= 0.95 / <= 0.08);
  * head-region PSNR: that render on white vs the photo, over the outline (target >= 25 dB), and its
    ceiling for the region the run used (the photo inside the region, white outside: outline pixels the
    region misses cost the fit as much as a white render there), and "region missed": the share of the
    outline that region leaves out;
  * colour noise at yaw 90 and 180 (mean |chroma - blur(chroma)|, sigma 2 px, over the render's
    interior: alpha > 0.95 eroded by 6 px), and the same of the init head (issue 11: <= 1.5x init);
  * opaque0: from the canonical front camera (yaw 0, not the photo's), the share of the render's
    interior (alpha > 0.5 eroded by 6 px, as bench_unseen) with alpha >= 0.95, fitted and init
    (issue 11: >= 0.97, no specks where the head should be solid);
  * hair180: the back of the head at yaw 180 (the render's interior, alpha > 0.95 eroded by 3 px, in
    the upper half of its silhouette's rows) as the share of pixels nearer the photo's hair colour than
    its skin colour (quality.nearer_share, quality.hair_skin_colours with the run's landmarks), fitted
    and init (issue 10: short hair is hair down to the nape;
    ~1 for a head with hair, meaningless for a bald one);
  * crown bleed: quality.edge_backdrop_share of the photo-view render within 12 px of the outline's
    edge in the outline's top 35 % of rows: the share of the crown's edge painted in the backdrop's
    colour (issue 11's edge colours), fitted and init.

FLAME: --flame PATH (a real FLAME model) or, by default, the synthetic FLAME-format model the tests
build (avatarcli.testing.synthetic_flame): its shape is not a human head, so figures that depend on
the fitted shape (coverage, spill, PSNR) mean little with it; the region IoU does not depend on FLAME.

    python bench/bench_real.py --out /tmp/bench_real                 # every portrait, pipeline defaults
    python bench/bench_real.py --out /tmp/br --steps 50 --n-gaussians 5000 --only astronaut
    python bench/bench_real.py --out /tmp/br --flame ~/flame
    python bench/bench_real.py --out /tmp/br --region-only       # the region IoU alone (seconds)

--region-only stops after the region: dlib landmarks and the weight-free segmentation at the working
size (what reconstruct computes before fitting; it uses no FLAME), its IoU with the drawn outline, and
an overlay per portrait (NAME.region.png: outside the region dimmed, the outline drawn in red).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

YAWS = (0, 60, 90, 180)


def _render(head: Path, flame: Path, out: Path, *extra: str) -> tuple[np.ndarray, np.ndarray]:
    """(rgb on white [H, W, 3] in 0..1, alpha [H, W]) from two `avatar render` calls (over white, over black)."""
    from PIL import Image

    from avatarcli.cli import main

    imgs = []
    for bg in ("white", "black"):
        p = out.with_name(f"{out.stem}.{bg}.png")
        with contextlib.redirect_stdout(io.StringIO()):
            rc = main(["--quiet", "render", str(head), "-o", str(p), "--flame", str(flame), "--background", bg, *extra])
        if rc != 0:
            raise SystemExit(f"avatar render failed ({rc}) for {out}")
        imgs.append(np.asarray(Image.open(p).convert("RGB"), dtype=np.float64) / 255.0)
    white, black = imgs
    alpha = np.clip(1.0 - (white - black).mean(-1), 0.0, 1.0)
    out.with_name(f"{out.stem}.black.png").unlink()
    out.with_name(f"{out.stem}.white.png").rename(out)
    return white, alpha


def _noise(rgb: np.ndarray, alpha: np.ndarray) -> float:
    from avatarcli import quality

    inner = quality.interior(alpha > 0.95, margin=6)
    return quality.colour_noise(rgb, inner) if inner.any() else float("nan")


def _opaque_share(alpha: np.ndarray) -> float:
    from avatarcli import quality

    inner = quality.interior(alpha > 0.5)
    return float((alpha[inner] >= 0.95).mean()) if inner.any() else float("nan")


def _hair_share(rgb: np.ndarray, alpha: np.ndarray, hair: np.ndarray, skin: np.ndarray) -> float:
    from avatarcli import quality

    back = quality.interior(alpha > 0.95, margin=3) & quality.upper_part(alpha > 0.5, 0.5)
    return quality.nearer_share(rgb, hair, skin, back) if back.any() else float("nan")


def _at(img: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """An [h, w] or [h, w, 3] float image resized to shape [H, W] (the photo camera renders at the working size)."""
    from PIL import Image

    if img.shape[:2] == shape:
        return img
    if img.ndim == 2:
        return np.asarray(Image.fromarray(img.astype(np.float32)).resize(shape[::-1]), dtype=np.float64)
    return np.asarray(Image.fromarray((img * 255).astype(np.uint8)).resize(shape[::-1]), dtype=np.float64) / 255.0


def _crown_bleed(head: Path, flame: Path, path: Path, photo: np.ndarray, outline: np.ndarray) -> float:
    from avatarcli import quality

    rgb, alpha = _render(head, flame, path, "--camera", "photo")
    rgb, alpha = _at(rgb, outline.shape), _at(alpha, outline.shape)
    return quality.edge_backdrop_share(rgb, alpha, photo, outline, band=12, top=0.35)


def _one(p, flame: Path, out: Path, args) -> dict:
    from avatarcli import quality
    from avatarcli.cli import main
    from avatarcli.landmarks.artifact import read_landmarks
    from avatarcli.segment.head_region import read_region

    work = out / "work"
    head = out / f"{p.name}.ply"
    cmd = ["--quiet", "reconstruct", str(p.image_path), "-o", str(head), "--flame", str(flame), "--no-diffusion",
           "--detector", "auto", "--workdir", str(work), "--device", args.device]  # fmt: skip
    if args.steps is not None:
        cmd += ["--steps", str(args.steps)]
    if args.n_gaussians is not None:
        cmd += ["--n-gaussians", str(args.n_gaussians)]
    t, c = time.perf_counter(), time.process_time()
    with contextlib.redirect_stdout(io.StringIO()):
        rc = main(cmd)
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    if rc != 0:
        return {"name": p.name, "error": f"reconstruct exit {rc}"}
    outline, photo = p.outline(), p.rgb().astype(np.float64) / 255.0
    region = read_region(work / p.name / "head_region.png", outline.shape)
    rgb, alpha = _render(head, flame, out / f"{p.name}.photo-view.png", "--camera", "photo")
    rgb, alpha = _at(rgb, outline.shape), _at(alpha, outline.shape)
    row = {
        "name": p.name,
        "iou": quality.iou(region, outline),
        "coverage": quality.coverage(alpha, outline),
        "spill": quality.spill(alpha, outline),
        "psnr": quality.region_psnr(rgb, photo, outline),
        # the most the fit can reach with this region: the photo inside it, white outside
        "cap": quality.region_psnr(np.where(region[..., None] > 0.5, photo, 1.0), photo, outline),
        "missed": 1.0 - quality.coverage(region, outline),  # the outline's share the region leaves out
        "wall": wall,
        "cpu": cpu,
    }
    init = work / p.name / "init.ply"
    hair, skin = quality.hair_skin_colours(photo, outline, read_landmarks(work / p.name / "landmarks.npz").landmarks)
    row["bleed"] = quality.edge_backdrop_share(rgb, alpha, photo, outline, band=12, top=0.35)
    row["bleed_init"] = _crown_bleed(init, flame, out / f"{p.name}.init.photo-view.png", photo, outline)
    for yaw in YAWS:
        size = ["--size", str(args.size), "--yaw", str(yaw)]
        f_rgb, f_a = _render(head, flame, out / f"{p.name}.yaw{yaw:03d}.png", *size)
        i_rgb, i_a = _render(init, flame, out / f"{p.name}.init.yaw{yaw:03d}.png", *size)
        if yaw == 0:
            row["opaque0"], row["opaque0_init"] = _opaque_share(f_a), _opaque_share(i_a)
        if yaw in (90, 180):
            row[f"noise{yaw}"], row[f"noise{yaw}_init"] = _noise(f_rgb, f_a), _noise(i_rgb, i_a)
        if yaw == 180:
            row["hair180"], row["hair180_init"] = (
                _hair_share(f_rgb, f_a, hair, skin),
                _hair_share(i_rgb, i_a, hair, skin),
            )
    return row


def _region_only(p, out: Path) -> dict:
    """The head region as reconstruct computes it (dlib landmarks, working size), its IoU and an overlay."""
    import cv2
    from PIL import Image

    from avatarcli import quality
    from avatarcli.io.images import load_image
    from avatarcli.landmarks.choose import load_detector
    from avatarcli.landmarks.detect import detect_landmarks
    from avatarcli.segment.head_region import segment_head

    photo = load_image(p.image_path)
    t, c = time.perf_counter(), time.process_time()
    lm = photo.to_working(detect_landmarks(photo, load_detector("dlib")).landmarks)  # [68, 2]
    region = segment_head(photo.rgb, lm)  # [h, w] at the working size
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    outline = p.outline()
    if region.shape != outline.shape:
        region = np.asarray(Image.fromarray(region).resize(outline.shape[::-1], Image.Resampling.BILINEAR))
    view = p.rgb().copy()
    view[region < 0.5] //= 3
    edge = cv2.morphologyEx(outline.astype(np.uint8), cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0
    view[edge] = (255, 0, 0)
    Image.fromarray(view).save(out / f"{p.name}.region.png")
    return {"name": p.name, "iou": quality.iou(region, outline), "coverage": quality.coverage(region, outline),
            "spill": quality.spill(region, outline), "wall": wall, "cpu": cpu}  # fmt: skip


def _print_table(cols, rows) -> None:
    table = [[h for h, _, _ in cols]]
    for r in rows:
        if "error" in r:
            table.append([r["name"], r["error"]] + [""] * (len(cols) - 2))
        else:
            table.append([f.format(r[k]) for _, k, f in cols])
    w = [max(len(row[i]) for row in table) for i in range(len(cols))]
    for i, row in enumerate(table):
        print("  ".join(s.ljust(w[j]) for j, s in enumerate(row)))
        if i == 0:
            print("  ".join("-" * x for x in w))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="folder for heads, work folders and turntable frames")
    ap.add_argument("--flame", type=Path, default=None, help="FLAME model (default: the synthetic test model)")
    ap.add_argument("--only", nargs="*", default=None, help="portrait names (default: all)")
    ap.add_argument("--steps", type=int, default=None, help="fit steps (default: the pipeline's)")
    ap.add_argument("--n-gaussians", type=int, default=None, help="Gaussians (default: the pipeline's)")
    ap.add_argument("--size", type=int, default=256, help="turntable frame size")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--region-only", action="store_true", help="stop after the head region (IoU and an overlay)")
    args = ap.parse_args(argv)

    from avatarcli.testing.portraits import portraits

    args.out.mkdir(parents=True, exist_ok=True)
    chosen = [p for p in portraits() if not args.only or p.name in args.only]
    if args.region_only:
        cols = [("portrait", "name", "{}"), ("region IoU", "iou", "{:.3f}"), ("coverage", "coverage", "{:.3f}"),
                ("spill", "spill", "{:.3f}"), ("wall s", "wall", "{:.1f}"), ("CPU s", "cpu", "{:.1f}")]  # fmt: skip
        print(f"bench_real --region-only: dlib landmarks, weight-free head region; overlays in {args.out}")
        _print_table(cols, [_region_only(p, args.out) for p in chosen])
        print("target: region IoU >= 0.9 (issue 9); spill here = region outside the outline / region")
        return 0
    flame = args.flame
    if flame is None:
        from avatarcli.testing.synthetic_flame import write_synthetic_flame

        flame = args.out / "synthetic-flame"
        if not flame.exists():
            write_synthetic_flame(flame)
    rows = [_one(p, flame, args.out, args) for p in chosen]
    cols = [("portrait", "name", "{}"), ("region IoU", "iou", "{:.3f}"), ("coverage", "coverage", "{:.3f}"),
            ("spill", "spill", "{:.3f}"), ("PSNR dB", "psnr", "{:.2f}"), ("(region cap)", "cap", "{:.1f}"), ("region missed", "missed", "{:.4f}"), ("noise90", "noise90", "{:.4f}"),
            ("(init)", "noise90_init", "{:.4f}"), ("noise180", "noise180", "{:.4f}"), ("(init)", "noise180_init", "{:.4f}"),
            ("opaque0", "opaque0", "{:.3f}"), ("(init)", "opaque0_init", "{:.3f}"),
            ("hair180", "hair180", "{:.3f}"), ("(init)", "hair180_init", "{:.3f}"), ("crown bleed", "bleed", "{:.3f}"),
            ("(init)", "bleed_init", "{:.3f}"),
            ("wall s", "wall", "{:.0f}"), ("CPU s", "cpu", "{:.0f}")]  # fmt: skip
    print(f"bench_real: FLAME {'synthetic test model' if args.flame is None else args.flame}, no diffusion, "
          f"steps {args.steps or 'default'}, Gaussians {args.n_gaussians or 'default'}; frames in {args.out}")  # fmt: skip
    _print_table(cols, rows)
    print("targets: region IoU >= 0.9 (issue 9); coverage >= 0.95, spill <= 0.08, PSNR >= 25 dB (issue 10); "
          "noise <= 1.5x init, opaque0 >= 0.97 (issue 11); hair180 ~1 on a head with hair, crown bleed ~0")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
