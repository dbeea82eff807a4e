"""FLAME landmark fit: accuracy and speed (issue 2), ratios against baselines from the same run.

Setup: the synthetic FLAME-format model, written to disk the way the real release looks and
loaded through `load_flame` (restricted unpickler, DECA embedding). N faces with random identity,
expression, jaw, neck and yaw uniform in [-35, 35] degrees, seen by the fit camera (focal 1.2 x
the long side, 512 x 512), landmarks with 1 px Gaussian noise per coordinate.

Accuracy:
  - landmark reprojection error of the fit against the NOISE-FREE landmarks (median over all
    landmarks of all faces; target < 2 px);
  - mesh error: mean vertex distance of the fitted canonical head (global pose and translation
    removed) to the true one after a similarity (Umeyama) alignment, against the same figure for
    the mean template (target: fit < template).
Speed:
  - one fit (median over N single calls; target < 2 s on a 2-core CPU);
  - N fits in one batched call against N single calls (target: well under N x one).
Times are wall clock and this process's CPU time (on a shared machine the CPU time is close
to what an idle machine's wall time would be).

    python bench/bench_fit_flame.py                  # N = 32
    python bench/bench_fit_flame.py --n 8 --threads 1
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from avatarcli.flame.fit import FitConfig, fit_flame  # noqa: E402
from avatarcli.flame.forward import canonical_vertices, flame_forward  # noqa: E402
from avatarcli.flame.loader import load_flame  # noqa: E402
from avatarcli.flame.params import FlameParams  # noqa: E402
from avatarcli.testing.synthetic_flame import random_flame_params, synthetic_landmarks, write_synthetic_flame  # noqa: E402


def umeyama_error(src: np.ndarray, dst: np.ndarray) -> float:
    """Mean distance between dst [V,3] and the similarity transform of src [V,3] that best fits it."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    a, b = src - mu_s, dst - mu_d
    U, S, Vt = np.linalg.svd(b.T @ a / len(src))
    D = np.eye(3)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        D[2, 2] = -1
    R = U @ D @ Vt
    s = np.trace(np.diag(S) @ D) / (a**2).sum(1).mean()
    return float(np.linalg.norm(b - s * a @ R.T, axis=1).mean())


def timed(fn):
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w0, time.process_time() - c0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=32, help="faces (default 32)")
    ap.add_argument("--noise", type=float, default=1.0, help="landmark noise, px per coordinate")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    N = args.n

    with tempfile.TemporaryDirectory() as d:
        write_synthetic_flame(Path(d), layout="deca", release="2020")
        (model, t_load, _) = timed(lambda: load_flame(Path(d)))
    m64 = model.to(dtype=torch.float64)
    params = random_flame_params(N, seed=args.seed, n_shape=300, n_expr=100, yaw_deg=(-35.0, 35.0))
    size = (512, 512)
    lms, clean = synthetic_landmarks(model, params, image_size=size, noise_px=args.noise, seed=args.seed + 1)
    cfg = FitConfig()

    fit_flame(model, lms[:1], cfg)  # warm-up (first-call allocations)
    fits, w_batch, c_batch = timed(lambda: fit_flame(model, lms, cfg))
    singles_w, singles_c, single_fits = [], [], []
    for lm in lms:
        f, w, c = timed(lambda lm=lm: fit_flame(model, [lm], cfg))
        singles_w.append(w)
        singles_c.append(c)
        single_fits.append(f[0])

    # accuracy (of the batched fits)
    reproj, mesh_fit, mesh_mean = [], [], []
    true_canon = canonical_vertices(m64, params).numpy()  # [N,V,3]
    for b, fit in enumerate(fits):
        p = fit.params(dtype=torch.float64)
        X = flame_forward(m64, p).landmarks[0].numpy() - fit.translation.astype(np.float64)
        reproj.append(np.linalg.norm(fit.project(X) - clean[b], axis=-1))
        mesh_fit.append(umeyama_error(canonical_vertices(m64, p)[0].numpy(), true_canon[b]))
        mean = FlameParams.zeros(1, 0, 0, dtype=torch.float64)
        mesh_mean.append(umeyama_error(canonical_vertices(m64, mean)[0].numpy(), true_canon[b]))
    reproj = np.stack(reproj)  # [N,68]
    mesh_fit, mesh_mean = np.array(mesh_fit), np.array(mesh_mean)
    batch_vs_single = max(abs(float(np.abs(a.shape - s.shape).max())) for a, s in zip(fits, single_fits))

    med = float(np.median(reproj))
    one_w, one_c = float(np.median(singles_w)), float(np.median(singles_c))
    sum_w, sum_c = float(np.sum(singles_w)), float(np.sum(singles_c))
    rows = [
        ("model load (pickle + embedding)", f"{t_load:.2f} s", "", ""),
        (
            "reprojection error vs noise-free, median",
            f"{med:.2f} px",
            f"{med / args.noise:.2f} x noise",
            "PASS" if med < 2.0 else "FAIL",
        ),
        ("  per-face median: worst face", f"{float(np.median(reproj, 1).max()):.2f} px", "", ""),
        ("  90th percentile / max", f"{float(np.percentile(reproj, 90)):.2f} / {float(reproj.max()):.2f} px", "", ""),
        (
            "mesh error after similarity, fit",
            f"{1000 * mesh_fit.mean():.2f} mm",
            f"{mesh_fit.mean() / mesh_mean.mean():.2f} x template",
            "PASS" if mesh_fit.mean() < mesh_mean.mean() else "FAIL",
        ),
        ("mesh error after similarity, mean template", f"{1000 * mesh_mean.mean():.2f} mm", "1.00 (baseline)", ""),
        ("  faces where fit < template", f"{int((mesh_fit < mesh_mean).sum())} / {N}", "", ""),
        (
            "one fit (median of singles), wall / CPU",
            f"{one_w:.2f} / {one_c:.2f} s",
            "",
            "PASS" if min(one_w, one_c) < 2.0 else "FAIL",
        ),
        (f"{N} x one fit, wall / CPU", f"{sum_w:.2f} / {sum_c:.2f} s", "1.00 (baseline)", ""),
        (
            f"{N} in one call, wall / CPU",
            f"{w_batch:.2f} / {c_batch:.2f} s",
            f"{w_batch / sum_w:.2f} / {c_batch / sum_c:.2f} of {N} x one",
            "PASS" if c_batch < 0.5 * sum_c else "CHECK",
        ),
        ("batched vs single fit, max |shape| diff", f"{batch_vs_single:.1e}", "", ""),
    ]
    print(f"fit-flame bench: N={N}, noise {args.noise} px, yaw U[-35, 35] deg, image {size[1]}x{size[0]}, "
          f"torch threads {torch.get_num_threads()}, FitConfig defaults (n_shape {cfg.n_shape}, n_expr {cfg.n_expr})")  # fmt: skip
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    w2 = max(len(r[2]) for r in rows)
    print(f"{'measure':<{w0}}  {'value':>{w1}}  {'ratio':<{w2}}  target")
    print("-" * (w0 + w1 + w2 + 12))
    for r in rows:
        print(f"{r[0]:<{w0}}  {r[1]:>{w1}}  {r[2]:<{w2}}  {r[3]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
