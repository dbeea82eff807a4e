"""`avatar reconstruct` throughput: many photos in ONE call against one call per photo.

One call loads every model once (FLAME, the landmark detector, the encode models, the
diffusion denoiser) and then runs the stages per photo; one call per photo pays the loading
(and, as separate processes, Python start-up and imports) every time. Both ways run the same
photos with the same settings in the same process run, so the ratio is the figure:

    per-photo time, one call per photo  /  per-photo time, all photos in one call

Modes
  in-process : run_batch([one job]) per photo, models loaded per call (no interpreter start-up)
  subprocess : `python -m avatarcli reconstruct PHOTO ...` per photo, as a shell loop would
               (--subprocess; what `for f in *.jpg; do avatar reconstruct ...; done` costs)
Photos: synthetic renders of the synthetic FLAME-format model (avatarcli.testing.synthetic_photo)
with their true landmarks (--landmarks: no detector), or the tiny random detector (--detector).
Models: tiny random models of the real classes by default (--models tiny), or whatever the
resolver finds (--models installed: the real pinned weights on a prepared GPU machine; then the
loading cost is that of the real multi-GB models, which is where one call pays off most).

    python bench/bench_reconstruct.py                          # 4 photos, CPU, tiny models, no diffusion
    python bench/bench_reconstruct.py --n 8 --diffusion --rounds 1
    python bench/bench_reconstruct.py --device cuda --models installed --diffusion --size 512 --subprocess
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402


def make_inputs(root: Path, n: int, size: int) -> tuple[Path, Path, Path]:
    from avatarcli.io.hashing import sha256_file
    from avatarcli.landmarks.artifact import Landmarks, write_landmarks
    from avatarcli.testing.synthetic_flame import write_synthetic_flame
    from avatarcli.testing.synthetic_photo import make_synthetic_photo

    flame = write_synthetic_flame(root / "flame")
    (root / "photos").mkdir()
    (root / "lm").mkdir()
    for i in range(n):
        p = make_synthetic_photo(size=size, yaw_deg=-20 + 40 * i / max(n - 1, 1), seed=i)
        img = root / "photos" / f"face{i:03d}.png"
        Image.fromarray(p.rgb).save(img)
        lo, hi = p.landmarks.min(0), p.landmarks.max(0)
        write_landmarks(
            root / "lm" / f"face{i:03d}.npz",
            Landmarks(p.size, p.landmarks, np.ones(68), np.r_[lo, hi], sha256_file(img), "truth"),
        )
    return flame, root / "photos", root / "lm"


def setup_tiny_models(root: Path, detector: bool) -> None:
    from avatarcli.testing.tiny_diffusion import write_tiny_models
    from avatarcli.testing.tiny_face_alignment import env, write_tiny_face_alignment
    from avatarcli.weights import env_var_for

    for name, path in write_tiny_models(root / "tiny").items():
        os.environ[env_var_for(name)] = str(path)
    if detector:
        os.environ.update(env(write_tiny_face_alignment(root / "fa", sfd="one")))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=4, help="photos")
    ap.add_argument("--size", type=int, default=64, help="photo side (px)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--models", choices=["tiny", "installed"], default="tiny")
    ap.add_argument("--diffusion", action="store_true", help="encode + diffusion rounds (default: --no-diffusion)")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--steps", type=int, default=10, help="Gaussian fit steps")
    ap.add_argument("--n-gaussians", type=int, default=2000)
    ap.add_argument(
        "--detector",
        action="store_true",
        help="run the landmark detector instead of given landmarks (needs --size >= 128 with tiny models)",
    )
    ap.add_argument("--subprocess", action="store_true", help="also time one `avatar reconstruct` process per photo")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = ap.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from avatarcli.reconstruct import ReconstructConfig, plan_batch, run_batch

    root = Path(tempfile.mkdtemp(prefix="bench-reconstruct-"))
    flame, photos, lms = make_inputs(root, args.n, args.size)
    if args.models == "tiny":
        setup_tiny_models(root, args.detector)
    landmarks = None if args.detector else lms
    cfg = ReconstructConfig(
        rounds=args.rounds if args.diffusion else 0, no_diffusion=not args.diffusion, device=args.device, flame=flame,
        steps=args.steps, n_gaussians=args.n_gaussians, max_side=max(args.size, 64),
    )  # fmt: skip

    def per_call(out: Path) -> tuple[float, float]:
        """One run_batch per photo, models loaded by each call. -> (total s, of which model loading)."""
        t0, c0, load = time.perf_counter(), time.process_time(), 0.0
        for img in sorted(photos.iterdir()):
            lm = None if landmarks is None else landmarks / f"{img.stem}.npz"
            jobs = plan_batch([img], out / f"{img.stem}.ply", lm)
            res = run_batch(jobs, cfg)
            assert res.jobs[0].status == "done", res.jobs[0].error
            load += res.model_load_seconds
        return time.perf_counter() - t0, time.process_time() - c0, load

    def one_call(out: Path):
        t0, c0 = time.perf_counter(), time.process_time()
        res = run_batch(plan_batch([photos], out, landmarks), cfg)
        assert res.count("done") == args.n, [j.error for j in res.failed]
        return time.perf_counter() - t0, time.process_time() - c0, res

    # warm-up (imports, allocator, first-call kernels) so neither side pays it alone
    run_batch(
        plan_batch(
            [sorted(photos.iterdir())[0]],
            root / "warm" / "w.ply",
            None if landmarks is None else sorted(lms.iterdir())[0],
        ),
        cfg,
    )

    t_one, cpu_one, res = one_call(root / "batch")
    t_each, cpu_each, load_each = per_call(root / "each")
    rows = [
        ("all photos in one call", t_one, cpu_one, res.model_load_seconds, 1.0),
        ("one run_batch per photo", t_each, cpu_each, load_each, cpu_each / cpu_one),
    ]
    if args.subprocess:
        base = [sys.executable, "-m", "avatarcli", "--quiet", "reconstruct"]
        opts = ["--flame", str(flame), "--device", args.device, "--steps", str(args.steps), "--n-gaussians", str(args.n_gaussians),
                "--max-side", str(max(args.size, 64))]  # fmt: skip
        opts += ["--rounds", str(args.rounds)] if args.diffusion else ["--no-diffusion"]
        import resource

        t0, c0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
        for img in sorted(photos.iterdir()):
            lm = [] if landmarks is None else ["--landmarks", str(landmarks / f"{img.stem}.npz")]
            subprocess.run(base + [str(img), "-o", str(root / "proc" / f"{img.stem}.ply"), *lm, *opts], check=True)
        t_proc = time.perf_counter() - t0
        c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu_proc = (c1.ru_utime - c0.ru_utime) + (c1.ru_stime - c0.ru_stime)
        rows.append(("one process per photo", t_proc, cpu_proc, float("nan"), cpu_proc / cpu_one))

    stages: dict[str, list[float]] = {}
    for j in res.jobs:
        for k, v in j.stage_times.items():
            stages.setdefault(k, []).append(v)

    dev = args.device
    print(f"\navatar reconstruct throughput: {args.n} photos {args.size}x{args.size}, device {dev}, models {args.models}, "
          f"{'diffusion ' + str(args.rounds) + ' round(s)' if args.diffusion else 'no diffusion'}, {args.steps} fit steps, "
          f"{args.n_gaussians} Gaussians, torch threads {torch.get_num_threads()}")  # fmt: skip
    print(
        "(ratios of CPU time, which a busy shared machine disturbs less than wall time; on a GPU compare the wall columns)"
    )
    print(f"{'way':<26} {'wall s':>8} {'cpu s':>8} {'cpu/photo s':>12} {'model load s':>13} {'x one call (cpu)':>17}")
    for name, t, cpu, load, ratio in rows:
        print(f"{name:<26} {t:>8.2f} {cpu:>8.2f} {cpu / args.n:>12.2f} {load:>13.2f} {ratio:>17.2f}")
    print("\nstage time per photo in the one-call run (mean s):")
    for k, v in stages.items():
        print(f"  {k:<16} {np.mean(v):.3f}")
    if args.json:
        print(json.dumps({"rows": [dict(zip(["way", "wall_s", "cpu_s", "model_load_s", "cpu_ratio"], r)) for r in rows],
                          "stages": {k: float(np.mean(v)) for k, v in stages.items()}}, default=float))  # fmt: skip


if __name__ == "__main__":
    main()
