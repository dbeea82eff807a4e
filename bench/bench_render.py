"""Render speed, as ratios against a baseline measured in the same run.

CPU (torch backend): forward + backward of a head-like scene (Gaussians on a FLAME-sized
ellipsoid, 1-3 px footprints, SH degree 1), baseline 20k Gaussians at 256x256; scaling with the
Gaussian count and with the image size. Issue target: the baseline under 1 s on a 2-core machine.

Old vs new compositing (CPU): the same scenes with the bounding-box / autograd compositing that the
row-segment one with its hand-written backward replaced (tests/reference_raster.py), in the same run;
and one forward + backward on 1 and on 2 torch threads (CPU time and wall time).

GPU (skipped without CUDA): re-posing a FLAME-bound 100k-Gaussian head (one batched LBS +
triangle frames) plus gsplat rendering at 512x512, against a bare `gsplat.rasterization` call on
the same (already posed) Gaussians. Issue target: at most 1.5x.

    python bench/bench_render.py                 # everything that this machine can run
    python bench/bench_render.py --quick         # fewer repeats
    python bench/bench_render.py --threads 2     # torch CPU threads (default: torch's choice)
    python bench/bench_render.py --only compositing threads --quick
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# isort: off
import avatarcli  # noqa: E402, F401  (before torch: its OpenMP wait policy, as the avatar command has it)
import torch  # noqa: E402

# isort: on

from avatarcli.gaussians.model import Gaussians  # noqa: E402
from avatarcli.render.api import render  # noqa: E402
from tests.fixtures.scenes import make_head_scene  # noqa: E402
from tests.reference_raster import use_reference  # noqa: E402


def timeit(fn, repeats: int, warmup: int = 1, sync=None) -> tuple[float, float]:
    """(wall, cpu) seconds: the minimum over `repeats` calls after `warmup` calls.

    cpu is this process's CPU time (all its threads): on a shared machine it is what the call
    costs, close to the wall time the same call takes on an idle machine with one thread.
    The minimum is the figure least disturbed by other processes."""
    for _ in range(warmup):
        fn()
        if sync:
            sync()
    walls, cpus = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        fn()
        if sync:
            sync()
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    return min(walls), min(cpus)


def fwd_bwd(g: Gaussians, cam, backend: str = "torch", stats: dict | None = None):
    leaves = {
        f: getattr(g, f).detach().clone().requires_grad_(True) for f in ("means", "quats", "scales", "opacities", "sh")
    }

    def step():
        out = render(Gaussians(**leaves), cam, backend=backend, stats=stats)
        loss = out.rgb.square().mean() + out.alpha.mean()
        loss.backward()

    return step


def forward_only(g: Gaussians, cam, backend: str = "torch"):
    def step():
        with torch.no_grad():
            render(g, cam, backend=backend)

    return step


def table(rows: list[tuple], header: tuple) -> str:
    w = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(str(c).rjust(w[i]) for i, c in enumerate(r)) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (x + 2) for x in w) + "|"] + [line(r) for r in rows])


def cpu_section(repeats: int) -> None:
    print(f"## CPU, torch backend (torch {torch.__version__}, {torch.get_num_threads()} threads)\n")
    base_key = (20000, 256)
    cases = [(n, 256) for n in (5000, 10000, 20000, 40000)] + [(20000, s) for s in (128, 512)]
    results = {}
    for n, size in [base_key] + [c for c in cases if c != base_key]:
        g, cam = make_head_scene(n, 0, size=size)  # footprints 1-3 px at this size
        stats: dict = {}
        fb_wall, fb_cpu = timeit(fwd_bwd(g, cam, stats=stats), repeats)
        frags = stats["composited"] // (repeats + 1)
        f_wall, f_cpu = timeit(forward_only(g, cam), repeats)
        results[(n, size)] = (f_wall, f_cpu, fb_wall, fb_cpu, frags)
    base_cpu = results[base_key][3]
    rows = []
    for n, size in cases:
        f_wall, f_cpu, fb_wall, fb_cpu, frags = results[(n, size)]
        rows.append((f"{n // 1000}k", f"{size}x{size}", f"{frags / 1e6:.2f}M", f"{f_cpu * 1000:.0f}", f"{fb_cpu * 1000:.0f}",
                     f"{fb_wall * 1000:.0f}", f"{fb_cpu / base_cpu:.2f}"))  # fmt: skip
    print(
        table(
            rows,
            (
                "Gaussians",
                "image",
                "fragments",
                "fwd cpu ms",
                "fwd+bwd cpu ms",
                "fwd+bwd wall ms",
                "fwd+bwd cpu / baseline",
            ),
        )
    )
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    b_wall, b_cpu = results[base_key][2], results[base_key][3]
    print(
        f"\nbaseline: 20k Gaussians at 256x256, forward+backward: {b_cpu * 1000:.0f} ms CPU time, {b_wall * 1000:.0f} ms wall "
        f"(load average {load} on {os.cpu_count()} cores); target < 1 s: {'meets' if b_cpu < 1.0 else 'MISSES'} (CPU time)\n"
    )


def compositing_section(repeats: int) -> None:
    """The library's compositing against the reference it replaced, forward and forward + backward."""
    print(f"## CPU: old (reference) vs new compositing ({torch.get_num_threads()} threads)\n")
    rows = []
    for n, size in ((20000, 256), (30000, 512)):
        g, cam = make_head_scene(n, 0, size=size, footprint_px=(1.0, 6.0))
        stats: dict = {}
        fwd_bwd(g, cam, stats=stats)()
        res = {}
        for name in ("old", "new"):
            with use_reference() if name == "old" else contextlib.nullcontext():
                res[name] = (timeit(forward_only(g, cam), repeats)[1], timeit(fwd_bwd(g, cam), repeats)[1])
        (of, ofb), (nf, nfb) = res["old"], res["new"]
        rows.append((f"{n // 1000}k", f"{size}x{size}", f"{stats['fragments'] / 1e6:.2f}M", f"{of * 1000:.0f}",
                     f"{nf * 1000:.0f}", f"{nf / of:.2f}", f"{ofb * 1000:.0f}", f"{nfb * 1000:.0f}", f"{nfb / ofb:.2f}"))  # fmt: skip
    head = (
        "Gaussians",
        "image",
        "fragments",
        "old fwd ms",
        "new fwd ms",
        "new/old",
        "old f+b ms",
        "new f+b ms",
        "new/old",
    )
    print(table(rows, head))
    print(f"\nCPU time (min of {repeats}), load average {', '.join(f'{x:.1f}' for x in os.getloadavg())}\n")


def threads_section(repeats: int) -> None:
    """One forward + backward (30k Gaussians, 512x512) on 1 and 2 torch threads: CPU and wall time."""
    policy = os.environ.get("OMP_WAIT_POLICY")
    print(f"## CPU: torch threads, one forward + backward (30k Gaussians, 512x512), OMP_WAIT_POLICY={policy}\n")
    g, cam = make_head_scene(30000, 0, size=512, footprint_px=(1.0, 6.0))
    before = torch.get_num_threads()
    rows, base = [], None
    for t in (1, 2):
        torch.set_num_threads(t)
        wall, cpu = timeit(fwd_bwd(g, cam), repeats)
        base = base or (wall, cpu)
        rows.append(
            (str(t), f"{cpu * 1000:.0f}", f"{wall * 1000:.0f}", f"{cpu / base[1]:.2f}", f"{wall / base[0]:.2f}")
        )
    torch.set_num_threads(before)
    print(table(rows, ("threads", "cpu ms", "wall ms", "cpu / 1 thread", "wall / 1 thread")))
    print(
        f"\nmin of {repeats}; load average {', '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} cores\n"
    )


def gpu_section(repeats: int) -> None:
    if not torch.cuda.is_available():
        print("## GPU: skipped (no CUDA)\n")
        return
    import dataclasses

    import gsplat
    import numpy as np

    from avatarcli.animate.expressions import clip_from_arrays
    from avatarcli.animate.pose import HeadPoser
    from avatarcli.animate.sequence import build_sequence
    from avatarcli.render.gsplat_backend import gsplat_intrinsics
    from avatarcli.testing.synthetic_flame import make_synthetic_flame
    from tests.test_animate import _head

    dev = torch.device("cuda")
    print(f"## GPU ({torch.cuda.get_device_name(dev)}, gsplat {gsplat.__version__})\n")
    model = dataclasses.replace(make_synthetic_flame(), sha256="a" * 64)
    head = _head(model, n=100_000)
    poser = HeadPoser.from_ply(model, head, device=dev)
    jaw = np.zeros((1, 3), np.float32)
    jaw[0, 0] = 0.3
    seq = build_sequence(
        [clip_from_arrays("j.npz", {"jaw_pose": np.repeat(jaw, 2, 0), "fps": np.float32(30)})], model.n_expr
    )
    one = seq.slice(1, 2)
    size = 512
    from avatarcli.stages.animate import AnimateConfig, make_cameras

    cam = make_cameras(AnimateConfig(size=size), poser, 1)(0).to(dev)
    g = poser.gaussians(poser.vertices(one))
    g = Gaussians(
        g.means[0].contiguous(),
        g.quats[0].contiguous(),
        g.scales[0].contiguous(),
        g.opacities[0].contiguous(),
        g.sh[0].contiguous(),
    )
    sync = torch.cuda.synchronize
    Ks = gsplat_intrinsics(cam.K[None])
    V = cam.viewmat[None]

    def bare():
        with torch.no_grad():
            gsplat.rasterization(g.means, g.quats, g.scales, g.opacities, g.sh, V, Ks, size, size, sh_degree=g.sh_degree,
                                 near_plane=0.01, eps2d=0.3, packed=False, rasterize_mode="classic")  # fmt: skip

    def repose_render():
        with torch.no_grad():
            G = poser.gaussians(poser.vertices(one))
            gg = Gaussians(G.means[0], G.quats[0], G.scales[0], G.opacities[0], G.sh[0])
            render(gg, cam, backend="gsplat")

    reps = max(repeats * 20, 50)
    t_bare = timeit(bare, reps, warmup=5, sync=sync)[0]
    t_full = timeit(repose_render, reps, warmup=5, sync=sync)[0]
    rows = [
        ("bare gsplat.rasterization", f"{t_bare * 1000:.2f}", f"{1 / t_bare:.0f}", "1.00"),
        ("re-pose + render (avatarcli)", f"{t_full * 1000:.2f}", f"{1 / t_full:.0f}", f"{t_full / t_bare:.2f}"),
    ]
    print(table(rows, ("100k Gaussians, 512x512", "ms / frame", "frames / s", "ratio")))
    print(f"\ntarget: ratio <= 1.5 -> {'meets' if t_full / t_bare <= 1.5 else 'MISSES'}\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer repeats")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--no-cpu", action="store_true")
    sections = {"cpu": cpu_section, "compositing": compositing_section, "threads": threads_section, "gpu": gpu_section}
    ap.add_argument("--only", nargs="*", choices=list(sections), default=None, help="sections to run (default: all)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    repeats = 1 if a.quick else 3
    for name, fn in sections.items():
        if (a.only is None or name in a.only) and not (a.no_cpu and name != "gpu"):
            fn(repeats)


if __name__ == "__main__":
    main()
