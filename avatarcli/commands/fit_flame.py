"""`avatar fit-flame`: FLAME shape, expression, pose and camera from landmarks.npz files."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from avatarcli.commands.common import DeviceOpt, FlameOpt, existing_inputs, output_for
from avatarcli.io.atomic import check_output_path
from avatarcli.landmarks.artifact import read_landmarks
from avatarcli.progress import info, progress, warn


def fit_flame_command(
    inputs: List[Path] = typer.Argument(..., help="landmarks.npz files (from `avatar landmarks`).", show_default=False),
    output: Path = typer.Option(
        ..., "--output", "-o", help="flame.npz for one input; a folder of NAME.npz for several.", show_default=False
    ),
    flame: Optional[Path] = FlameOpt,
    device: str = DeviceOpt,
    n_shape: int = typer.Option(100, "--n-shape", min=0, help="Shape coefficients fitted (the rest stay zero)."),
    n_expr: int = typer.Option(50, "--n-expr", min=0, help="Expression coefficients fitted (the rest stay zero)."),
    focal: Optional[float] = typer.Option(
        None,
        "--focal",
        min=1e-3,
        help="Focal length in pixels, if known (default: fitted, prior 1.2 x the image's long side).",
        show_default=False,
    ),
) -> int:
    """Fit FLAME (shape, expression, global/neck/jaw pose, translation, focal length) to 68 landmarks.

    All inputs are fitted together in one batched optimisation. Prints each fit's mean landmark
    error in pixels and warns when it is poor (over 5 px and over 2 % of the face size).

    \b
    Examples:
      avatar fit-flame face.landmarks.npz -o face.flame.npz --flame ~/flame
      avatar fit-flame lm/*.npz -o fits/ --flame ~/flame/generic_model.pkl
      AVATAR_FLAME=~/flame avatar fit-flame a.npz b.npz -o fits/ --focal 1400
    """
    from avatarcli.device import resolve_device
    from avatarcli.flame.artifact import write_flame_fit
    from avatarcli.flame.fit import FitConfig
    from avatarcli.flame.loader import load_flame
    from avatarcli.stages.fit_flame import fit_photos

    existing_inputs(inputs)
    outs = [check_output_path(p) for p in output_for(inputs, output, ".npz")]
    marks = [read_landmarks(p) for p in inputs]  # validates every input before FLAME is loaded
    dev = resolve_device(device)
    model = load_flame(flame)
    cfg = FitConfig(n_shape=n_shape, n_expr=n_expr, fixed_focal_px=focal)
    with progress() as bar:
        task = bar.add_task("fit-flame", total=len(inputs), status=f"{len(inputs)} input(s)")
        fitted = fit_photos(model, marks, cfg, dev)
        for dst, (fit, _) in zip(outs, fitted):
            write_flame_fit(dst, fit)
            bar.advance(task)
    for src, dst, (_, q) in zip(inputs, outs, fitted):
        info(f"{src} -> {dst}: mean landmark error {q.mean_error_px:.2f} px (max {q.max_error_px:.2f} px)")
        if q.poor:
            warn(f"{src}: poor FLAME fit (mean landmark error {q.mean_error_px:.1f} px); check the landmarks")
    return 0


def register(app: typer.Typer) -> None:
    app.command("fit-flame", no_args_is_help=True)(fit_flame_command)
