"""The GPU figures of issue 15 in one run, as one table (run by bench/gpu_check.sh).

Parts, each timed against a baseline measured in the same run:
  repose   re-pose (batched FLAME LBS + triangle frames) + render of a 100k-Gaussian head at
           512x512 against a bare `gsplat.rasterization` call on the same posed Gaussians
           (targets: ratio <= 1.5, >= 900 frames/s including re-posing)
  denoise  the full denoise stage with the real architectures of sd-image-variations (random
           weights, fp16), 512 px views, the default schedule (target: < 30 s per head); its
           input-view fit at 512 px is reported on its own row
  recon    `reconstruct` of 8 photos in one call against one call per photo (per-photo time,
           batch ratio); the pinned weights when the resolver finds them, else the tiny models
--dry-run runs every part on the CPU with tiny sizes (torch rasterizer as the "bare" baseline,
the tiny diffusion models, 2 photos): it checks that the script works end to end; its figures
mean nothing for a GPU.

    python bench/gpu_check.py --dry-run --out /tmp/gpu_check.md
    python bench/gpu_check.py --out bench/gpu_check_results.md --extra "pytest -m gpu=12 passed"
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.bench_render import table, timeit  # noqa: E402

Row = tuple[str, str, str, str]  # part, figure, target, verdict


def verdict(ok: bool | None) -> str:
    return "-" if ok is None else ("meets" if ok else "MISSES")


def repose_part(dry: bool, dev: torch.device) -> list[Row]:
    """Re-pose + render against the bare rasterizer on the same Gaussians."""
    from avatarcli.animate.expressions import clip_from_arrays
    from avatarcli.animate.pose import HeadPoser
    from avatarcli.animate.sequence import build_sequence
    from avatarcli.gaussians.model import Gaussians
    from avatarcli.render.api import render
    from avatarcli.stages.animate import AnimateConfig, make_cameras
    from avatarcli.testing.synthetic_flame import make_synthetic_flame
    from tests.test_animate import _head

    n, size, reps = (2000, 64, 3) if dry else (100_000, 512, 200)
    model = dataclasses.replace(make_synthetic_flame(), sha256="a" * 64)
    poser = HeadPoser.from_ply(model, _head(model, n=n), device=dev)
    jaw = np.zeros((2, 3), np.float32)
    jaw[:, 0] = 0.3
    seq = build_sequence([clip_from_arrays("j.npz", {"jaw_pose": jaw, "fps": np.float32(30)})], model.n_expr).slice(
        1, 2
    )
    cam = make_cameras(AnimateConfig(size=size), poser, 1)(0).to(dev)
    G = poser.gaussians(poser.vertices(seq))
    g = Gaussians(*(t[0].contiguous() for t in (G.means, G.quats, G.scales, G.opacities, G.sh)))
    sync = torch.cuda.synchronize if dev.type == "cuda" else None
    if dry:
        from avatarcli.render.torch_raster import render_torch

        bare_name = "bare render_torch (dry run)"

        def bare():
            with torch.no_grad():
                render_torch(g.means, g.quats, g.scales, g.opacities, g.sh, cam.viewmat, cam.K, size, size)
    else:
        import gsplat

        from avatarcli.render.gsplat_backend import gsplat_intrinsics

        Ks, V = gsplat_intrinsics(cam.K[None]), cam.viewmat[None]
        bare_name = "bare gsplat.rasterization"

        def bare():
            with torch.no_grad():
                gsplat.rasterization(g.means, g.quats, g.scales, g.opacities, g.sh, V, Ks, size, size,
                                     sh_degree=g.sh_degree, near_plane=0.01, eps2d=0.3, packed=False,
                                     rasterize_mode="classic")  # fmt: skip

    def full():
        with torch.no_grad():
            P = poser.gaussians(poser.vertices(seq))
            render(Gaussians(P.means[0], P.quats[0], P.scales[0], P.opacities[0], P.sh[0]), cam, backend="auto")

    t_bare = timeit(bare, reps, warmup=3, sync=sync)[0]
    t_full = timeit(full, reps, warmup=3, sync=sync)[0]
    what = f"{n // 1000}k Gaussians {size}x{size}"
    return [
        ("repose", f"{bare_name}, {what}: {t_bare * 1e3:.2f} ms ({1 / t_bare:.0f} frames/s)", "baseline", "-"),
        ("repose", f"re-pose + render / bare: {t_full / t_bare:.2f}x", "<= 1.5x", verdict(t_full / t_bare <= 1.5)),
        ("repose", f"re-pose + render: {1 / t_full:.0f} frames/s", ">= 900 frames/s", verdict(1 / t_full >= 900)),
    ]


def denoise_part(dry: bool, dev: torch.device) -> list[Row]:
    """bench_denoise's run: real-size random models in fp16 (full) or the tiny ones (dry run)."""
    from bench.bench_denoise import full_mode, run, small_mode

    mode = small_mode() if dry else full_mode(dev)
    rows = run(mode, repeats=1 if dry else 3)
    by = {r[0].strip(): r for r in rows}
    total, fit = by["default denoise stage, total"][1], by["input-view fit"]
    what = f"{mode.name}: {mode.info['unet_params_M']}M-param UNet, {str(mode.dtype).replace('torch.', '')}, {mode.view_size} px"
    unet = by["micro: UNet call, 8 views + CFG (batch 16)"][1]
    return [
        (
            "denoise",
            f"full stage per head ({what}, {mode.info['n_views']} views x {mode.rounds} rounds): {total:.1f} s",
            "< 30 s",
            verdict(None if dry else total < 30),
        ),  # fmt: skip
        (
            "denoise",
            f"input-view fit at {mode.view_size} px, {fit[2]} steps: {fit[1]:.2f} s ({fit[1] / fit[2] * 1e3:.1f} ms/step)",
            "-",
            "-",
        ),  # fmt: skip
        (
            "denoise",
            f"one UNet call, 8 views + guidance: {unet * 1e3:.1f} ms; peak memory "
            f"{mode.info.get('peak_gpu_memory_GiB', '-')} GiB",
            "-",
            "-",
        ),  # fmt: skip
    ]


def recon_part(dry: bool, dev: torch.device) -> list[Row]:
    """reconstruct on N photos: one call for all against one call per photo."""
    from avatarcli.reconstruct import ReconstructConfig, plan_batch, run_batch
    from bench.bench_reconstruct import make_inputs, setup_tiny_models

    n, size = (2, 64) if dry else (8, 256)
    root = Path(tempfile.mkdtemp(prefix="gpu-check-recon-"))
    flame, photos, lms = make_inputs(root, n, size)
    installed = not dry and _weights_present()
    if not installed:
        setup_tiny_models(root, detector=False)
    if dry:  # the cheapest settings that still run the whole batch path (a loaded CPU is slow)
        cfg = ReconstructConfig(rounds=0, no_diffusion=True, device="cpu", flame=flame, steps=4, n_gaussians=500,
                                max_side=size)  # fmt: skip
    else:
        cfg = ReconstructConfig(rounds=1, no_diffusion=False, device=str(dev), flame=flame, steps=200,
                                n_gaussians=30_000, max_side=size)  # fmt: skip
        first = sorted(photos.iterdir())[0]
        run_batch(plan_batch([first], root / "warm" / "w.ply", lms / f"{first.stem}.npz"), cfg)  # warm-up
    t = time.perf_counter()
    res = run_batch(plan_batch([photos], root / "all", lms), cfg)
    t_all = time.perf_counter() - t
    assert res.count("done") == n, [j.error for j in res.failed]
    t = time.perf_counter()
    for img in sorted(photos.iterdir()):
        one = run_batch(plan_batch([img], root / "each" / f"{img.stem}.ply", lms / f"{img.stem}.npz"), cfg)
        assert one.jobs[0].status == "done", one.jobs[0].error
    t_each = time.perf_counter() - t
    models = "pinned weights" if installed else ("no diffusion" if dry else "tiny models")
    return [
        (
            "recon",
            f"{n} photos {size}px in one call ({models}, {cfg.rounds} round(s)): {t_all / n:.2f} s per photo",
            "-",
            "-",
        ),
        (
            "recon",
            f"one call per photo / one call for all: {t_each / t_all:.2f}x (per photo {t_each / n:.2f} s)",
            "> 1",
            verdict(t_each / t_all > 1),
        ),  # fmt: skip
    ]


def _weights_present() -> bool:
    try:
        from avatarcli.weights import resolve

        for name in ("fan-2d", "s3fd", "sd-image-variations", "face-parsing"):
            resolve(name)
        return True
    except Exception:  # noqa: BLE001 - any missing model: use the tiny ones
        return False


PARTS = {"repose": repose_part, "denoise": denoise_part, "recon": recon_part}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes (also chosen without CUDA)")
    ap.add_argument("--parts", default=",".join(PARTS), help="comma-separated subset of " + ", ".join(PARTS))
    ap.add_argument("--out", type=Path, default=None, help="also write the table (markdown) to this file")
    ap.add_argument("--extra", action="append", default=[], help="'part=figure' rows from the shell script")
    ap.add_argument("--budget", type=float, default=420.0, help="seconds; parts not started by then are skipped")
    a = ap.parse_args()
    dry = a.dry_run or not torch.cuda.is_available()
    dev = torch.device("cpu" if dry else "cuda")
    t0 = time.perf_counter()
    rows: list[Row] = [(p.split("=", 1)[0], p.split("=", 1)[-1], "-", "-") for p in a.extra]
    where = "CPU DRY RUN (tiny sizes: checks the script, the figures mean nothing)" if dry else None
    where = where or torch.cuda.get_device_name(dev)
    for name in a.parts.split(","):
        write(a.out, rows, where, final=False)  # a run cut short keeps the parts that finished
        if time.perf_counter() - t0 > a.budget:
            rows.append((name, f"skipped: the {a.budget:.0f} s budget was spent", "-", "-"))
            continue
        t = time.perf_counter()
        try:
            rows += PARTS[name](dry, dev)
        except Exception as e:  # noqa: BLE001 - one failing part must not lose the others' figures
            traceback.print_exc()
            rows.append((name, f"FAILED: {type(e).__name__}: {' '.join(str(e).split())[:160]}", "-", "FAILED"))
        print(f"[gpu_check] {name}: {time.perf_counter() - t:.1f} s", file=sys.stderr, flush=True)
    print(write(a.out, rows, where, final=True))
    return 1 if any(r[3] == "FAILED" for r in rows) else 0


def write(out: Path | None, rows: list[Row], where: str, final: bool) -> str:
    """The table as markdown, also written to `out` when given; not final: marked as partial."""
    load = os.getloadavg()[0]
    head = f"## gpu_check: {where}; torch {torch.__version__}; {time.strftime('%Y-%m-%d %H:%M')}; load {load:.1f}"
    text = head + ("" if final else " (PARTIAL: the run was cut short)") + "\n\n"
    text += (table(rows, ("part", "figure", "target", "verdict")) if rows else "(no rows yet)") + "\n"
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
    return text


if __name__ == "__main__":
    sys.exit(main())
