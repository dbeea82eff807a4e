"""`avatar doctor`: is this machine ready to run the pipeline? A table, and the fix for each problem."""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Optional

import torch
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from avatarcli.commands.common import WEIGHT_FREE_ROUTE, FlameOpt, error_line, with_flags
from avatarcli.errors import EXIT_ENVIRONMENT, EXIT_OK, AvatarError, EnvironmentProblem

MIN_FREE_BYTES = 10 << 30  # the default models take ~6 GB in the cache; leave room for outputs


@dataclass
class Check:
    name: str
    status: str  # "ok" | "missing" | "problem" | "warning" | "skipped" | "info"
    detail: str
    fix: str = ""
    required: bool = False  # the default pipeline cannot run while this is missing / a problem

    @property
    def failed(self) -> bool:
        return self.required and self.status in ("missing", "problem")


def _gib(n: float) -> str:
    return f"{n / (1 << 30):.1f} GiB"


def check_python() -> Check:
    v = sys.version_info
    ok = v >= (3, 10)
    return Check("python", "ok" if ok else "problem", f"{platform.python_version()} ({sys.executable})",
                 "" if ok else "install Python >= 3.10", required=True)  # fmt: skip


def check_packages() -> Check:
    parts, missing = [], []
    for pkg in ("torch", "gsplat", "face-alignment", "diffusers", "transformers", "safetensors"):
        try:
            parts.append(f"{pkg} {version(pkg)}")
        except PackageNotFoundError:
            missing.append(pkg)
    need = [m for m in missing if m != "gsplat"]
    detail = ", ".join(parts) + (f"; not installed: {', '.join(missing)}" if missing else "")
    return Check("packages", "problem" if need else "ok", detail,
                 f"pip install {' '.join(need)}" if need else "", required=bool(need))  # fmt: skip


def check_cuda() -> Check:
    if not torch.cuda.is_available():
        return Check("cuda", "info", f"no CUDA GPU (torch {torch.__version__}): every stage runs on the CPU, slower")
    gpus = []
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        gpus.append(f"cuda:{i} {p.name} ({_gib(p.total_memory)})")
    return Check("cuda", "ok", f"torch {torch.__version__}, CUDA {torch.version.cuda}: " + "; ".join(gpus))


def check_gsplat() -> Check:
    """Build (first use JIT-compiles where no wheel kernels exist) and render a small scene with
    gsplat, compared against the torch rasterizer."""
    if not torch.cuda.is_available():
        return Check("gsplat", "skipped", "skipped: no CUDA (the torch rasterizer renders on the CPU)")
    fix = "reinstall gsplat built for this torch/CUDA (see README), or run with --device cpu"
    try:
        from avatarcli.gaussians.model import Gaussians
        from avatarcli.render.api import render
        from avatarcli.render.camera import orbit_camera

        g = torch.Generator().manual_seed(0)
        n = 256
        means = (torch.rand(n, 3, generator=g) * 2 - 1) * 0.08
        quats = torch.nn.functional.normalize(torch.randn(n, 4, generator=g), dim=-1)
        scales = torch.full((n, 3), 0.01)
        opac = torch.full((n,), 0.8)
        sh = (torch.rand(n, 1, 3, generator=g) - 0.5) / 0.28209479177387814
        gs = Gaussians(means, quats, scales, opac, sh)
        cam = orbit_camera(0.0, 0.0, width=64, height=64)
        bg = torch.ones(3)
        t0 = time.perf_counter()
        out = render(gs.to("cuda"), cam.to("cuda"), bg.cuda(), backend="gsplat")
        torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        ref = render(gs, cam, bg, backend="torch")
        diff = float((out.rgb.float().cpu() - ref.rgb).abs().max())
        cover = float(ref.alpha.mean())
    except Exception as e:  # noqa: BLE001 - any failure here is the finding
        msg = " ".join(str(e).split())[:200]
        return Check("gsplat", "problem", f"cannot render with gsplat ({type(e).__name__}: {msg})", fix, required=True)
    if not (cover > 0.01 and diff < 0.05):
        return Check(
            "gsplat",
            "problem",
            f"gsplat renders but disagrees with the torch rasterizer (max diff {diff:.3f})",
            fix,
            required=True,
        )
    import gsplat

    return Check(
        "gsplat",
        "ok",
        f"gsplat {getattr(gsplat, '__version__', '?')}: rendered a 64x64 test scene in {dt:.2f} s (max diff to torch {diff:.1e})",
        required=True,
    )


def check_flame(flame: Path | None) -> Check:
    src = "--flame" if flame is not None else ("AVATAR_FLAME" if os.environ.get("AVATAR_FLAME") else None)
    fix = "register at https://flame.is.tue.mpg.de, download FLAME 2020 or 2023, then pass --flame PATH or set AVATAR_FLAME=PATH"
    try:
        from avatarcli.flame.loader import load_flame

        model = load_flame(flame)
    except EnvironmentProblem as e:
        return Check("flame", "missing", error_line(e), fix, required=True)
    except AvatarError as e:
        return Check(
            "flame",
            "problem",
            error_line(e),
            "point --flame / AVATAR_FLAME at an unmodified FLAME release file",
            required=True,
        )
    except Exception as e:  # noqa: BLE001
        return Check("flame", "problem", f"cannot load the FLAME model ({type(e).__name__}: {e})", fix, required=True)
    emb = getattr(model, "embedding_path", None)
    detail = (
        f"{getattr(model, 'release', 'unknown')} from {model.path} (via {src or 'default'}), sha256 {model.sha256[:16]}..., "
        f"{model.n_vertices} vertices, {model.n_shape} shape / {model.n_expr} expression coefficients; "
        f"landmark embedding: {emb if emb else 'none'}"
    )
    if model.landmarks is None:
        return Check(
            "flame",
            "problem",
            detail,
            "put DECA's landmark_embedding.npy (or FLAME_PyTorch's embeddings) next to the model",
            required=True,
        )
    return Check("flame", "ok", detail, required=True)


def check_weights(verify: bool) -> list[Check]:
    from avatarcli.weights import load_lock, status
    from avatarcli.weights.resolver import ROUTE_SETTINGS, without_download

    try:
        entries = load_lock()
    except AvatarError as e:
        return [Check("weights.lock", "problem", error_line(e), "reinstall avatarcli", required=True)]
    out = []
    for name, entry in entries.items():
        needed = entry.kind != "pip" and not entry.optional  # pip-installed and optional models never fail doctor
        try:
            st = status(name, check_hashes=verify)
        except Exception as e:  # noqa: BLE001
            out.append(
                Check(
                    f"model {name}",
                    "problem",
                    f"{type(e).__name__}: {e}",
                    entry.fix,
                    required=needed,
                )
            )
            continue
        where = f"{st.source} {st.folder}"
        if st.state == "present":
            hashed = f", {st.hashes_checked} sha256 checked" if verify else " (hashes not checked: --verify)"
            out.append(Check(f"model {name}", "ok", f"present, {_gib(st.size)} in {where}{hashed}", required=needed))
        elif st.state == "missing":
            fix = (
                entry.fix
                if entry.kind in ("pip", "manual")
                else f"avatar weights fetch {name}{with_flags(without_download([name]), ROUTE_SETTINGS)}"
            )
            out.append(Check(f"model {name}", "missing", f"not found ({where})", fix, required=needed))
        else:
            probs = "; ".join(st.problems[:3])
            out.append(Check(f"model {name}", "problem", f"{st.state}: {probs}",
                             f"{entry.fix} (or fix {entry.env_var})", required=needed))  # fmt: skip
    return out


def check_disk() -> Check:
    from avatarcli.weights import cache_root

    root = cache_root()
    p = root
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        free = shutil.disk_usage(p).free
    except OSError as e:
        return Check("disk", "warning", f"cannot stat {p}: {e.strerror}")
    detail = f"{_gib(free)} free for the cache {root}"
    if free < MIN_FREE_BYTES:
        return Check(
            "disk", "warning", detail, f"free space or set AVATAR_CACHE to a larger disk (models need ~{_gib(6 << 30)})"
        )
    return Check("disk", "ok", detail)


def run_checks(flame: Path | None = None, verify: bool = False, gpu: bool = True) -> list[Check]:
    checks = [check_python(), check_packages(), check_cuda()]
    checks.append(check_gsplat() if gpu else Check("gsplat", "skipped", "skipped (--no-gpu-test)"))
    checks.append(check_flame(flame))
    checks += check_weights(verify)
    checks.append(check_disk())
    return checks


_STYLE = {"ok": "green", "missing": "red", "problem": "red", "warning": "yellow", "skipped": "dim", "info": "cyan"}


def doctor_command(
    flame: Optional[Path] = FlameOpt,
    verify: bool = typer.Option(
        False, "--verify", help="Also recompute the sha256 of every model file (slow: several GB)."
    ),
    gpu_test: bool = typer.Option(
        True, "--gpu-test/--no-gpu-test", help="Render a small scene with gsplat when CUDA is present."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the checks as JSON on stdout."),
) -> int:
    """Check the setup: Python, torch, CUDA and the GPU, gsplat (renders a small scene), the FLAME
    model (found, release, sha256), each pinned model (present / missing / bad hash) and the free
    disk in the cache. Exit code 3 when something the default pipeline needs is missing, with the
    fix for each.

    \b
    Examples:
      avatar doctor
      avatar doctor --flame ~/flame --verify
      avatar doctor --json | jq '.checks[] | select(.status != "ok")'
    """
    checks = run_checks(flame, verify, gpu_test)
    failed = [c for c in checks if c.failed]
    if json_out:
        typer.echo(json.dumps({"ok": not failed, "checks": [asdict(c) for c in checks]}, indent=2))
    else:
        out = Console(
            file=sys.stdout,
            highlight=False,
            soft_wrap=False,
            width=max(100, shutil.get_terminal_size((120, 20)).columns),
        )
        table = Table(title="avatar doctor", show_lines=False)
        table.add_column("check", no_wrap=True)
        table.add_column("status", no_wrap=True)
        table.add_column("detail", overflow="fold")
        table.add_column("fix", overflow="fold")
        for c in checks:
            table.add_row(
                escape(c.name), f"[{_STYLE.get(c.status, 'white')}]{c.status}[/]", escape(c.detail), escape(c.fix)
            )
        out.print(table)
        if failed:
            out.print(f"[red]{len(failed)} problem(s)[/red] stop the default pipeline; fixes:")
            for c in failed:
                out.print(f"  {escape(c.name)}: {escape(c.fix)}")
            if any(c.name.startswith("model ") for c in failed):
                out.print(f"without downloaded weights (FLAME still needed): {escape(WEIGHT_FREE_ROUTE)}")
        else:
            out.print("[green]ready[/green]: everything the default pipeline needs is here")
    return EXIT_ENVIRONMENT if failed else EXIT_OK


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor_command)
