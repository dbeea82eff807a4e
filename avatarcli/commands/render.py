"""`avatar render`: a Gaussian PLY to a PNG view or an MP4/GIF turntable."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from avatarcli.commands.common import BackendOpt, BackgroundOpt, DeviceOpt, FlameOpt, existing_inputs, flag_names
from avatarcli.progress import info, progress


def render_command(
    ply: Path = typer.Argument(
        ..., help="A 3D Gaussian Splatting PLY (an avatarcli head or any other).", show_default=False
    ),
    output: Path = typer.Option(
        ..., "--output", "-o", help="OUT.png (one view), OUT.mp4 or OUT.gif (turntable).", show_default=False
    ),
    yaw: str = typer.Option(
        "0",
        "--yaw",
        help="Degrees around the up axis (0: the front; turntables start here). Several, comma-separated "
        "(--yaw 0,60,90,180), with OUT.png: one OUT_yaw<Y>.png per view, rendered in one call.",
    ),
    pitch: float = typer.Option(0.0, "--pitch", help="Degrees above (+) or below (-) the horizon."),
    size: Optional[int] = typer.Option(
        None,
        "--size",
        help="Image side in pixels. Default 512, or the photo's size (longer side) with --camera.",
        show_default=False,
    ),
    distance: Optional[float] = typer.Option(
        None,
        "--distance",
        help="Camera distance in scene units. Default: framed from the Gaussians' extent.",
        show_default=False,
    ),
    fov: float = typer.Option(20.0, "--fov", help="Vertical field of view in degrees."),
    up: str = typer.Option(
        "auto",
        "--up",
        help="Scene up axis: auto (+y for avatarcli heads, -y for other PLYs: the COLMAP/OpenCV y-down convention), y, -y, z, -z, x, -x.",
    ),
    frames: int = typer.Option(72, "--frames", help="Turntable frames (one full turn)."),
    fps: float = typer.Option(24.0, "--fps", help="Turntable frames per second."),
    background: str = BackgroundOpt,
    camera: Optional[str] = typer.Option(
        None,
        "--camera",
        help="'photo' (the fit stored in the head) or a flame.npz: render from the photo's viewpoint at its size, to lay over the photo.",
        show_default=False,
    ),
    flame: Optional[Path] = FlameOpt,
    sh_degree: Optional[int] = typer.Option(
        None, "--sh-degree", help="Spherical-harmonics degree used (default: all the PLY has).", show_default=False
    ),
    backend: str = BackendOpt,
    device: str = DeviceOpt,
) -> int:
    """Render a Gaussian PLY: one view to PNG, or a turntable to MP4 / GIF.

    Works on any standard 3DGS PLY: the view is framed from the Gaussians' extent.
    With --camera (an avatarcli head) the head is seen from the photo's camera, at the
    photo's size, so the image lies pixel for pixel over the photo.

    \b
    Examples:
      avatar render head.ply -o front.png
      avatar render head.ply -o turntable.mp4 --frames 120 --fps 30 --size 768
      avatar render head.ply -o overlay.png --camera photo
      avatar render head.ply -o side.png --yaw 60 --pitch 10 --background black
      avatar render head.ply -o view.png --yaw 0,60,90,180    # view_yaw0.png ... in one call
      avatar render scene.ply -o scene.gif --up -y --size 256 --backend torch
    """
    from avatarcli.render.views import parse_background
    from avatarcli.stages.render import RenderConfig, parse_yaws, plan_render, render_file

    yaws = parse_yaws(yaw)
    config = RenderConfig(
        yaw=yaws[0], views=yaws if len(yaws) > 1 else (), pitch=pitch, size=size, distance=distance, fov=fov, up=up, frames=frames, fps=fps,
        background=parse_background(background), backend=backend, device=device, camera=camera, sh_degree=sh_degree,
    )  # fmt: skip
    existing_inputs([ply])
    with flag_names(views="--yaw"):
        plan = plan_render(ply, output, config, flame=flame)
    n = len(plan.cameras)
    with progress() as bar:
        task = bar.add_task("render", total=n, status=f"{plan.ply.gaussians.n} Gaussians, {plan.backend}")
        render_file(plan, progress=lambda i, _n: bar.update(task, completed=i))
    cam = plan.cameras[0]
    if plan.kind == "views":
        info(f"wrote {n} views ({cam.width}x{cam.height}): {', '.join(str(p) for p in plan.outputs)}")
        return 0
    what = "1 view" if plan.kind == "png" else f"{n} frames at {config.fps:g} fps"
    info(f"wrote {output} ({what}, {cam.width}x{cam.height})")
    return 0


def register(app: typer.Typer) -> None:
    app.command("render", no_args_is_help=True)(render_command)
