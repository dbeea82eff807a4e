"""`avatar animate`: drive a bound Gaussian head with FLAME expressions and poses."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from avatarcli.commands.common import BackendOpt, BackgroundOpt, DeviceOpt, FlameOpt, existing_inputs
from avatarcli.progress import info, progress

HELP = """Animate a head PLY with FLAME expression/pose files: video, PNG frames or a PLY sequence.

An expression file (.npz) holds FLAME parameters per frame: expr [T, n], jaw_pose,
neck_pose, global_pose (or rotation), translation [T, 3], eyes_pose [T, 6], fps.
GaussianAvatars / VHAP flame_param.npz files are read as they are. A single-frame
file is a target: the head goes neutral -> target -> neutral over --duration.
Several --expr (or a folder of files, by name) play one after another.
--flame can be left out when AVATAR_FLAME is set.

\b
Examples:
  avatar animate head.ply --expr examples/expressions/jaw_open.npz -o jaw.mp4 --flame ~/flame
  avatar animate head.ply --expr examples/expressions/ --camera orbit -o clips.gif --size 256 --flame ~/flame
  avatar animate head.ply --expr flame_param.npz -o frames/ --ply-seq plys/ --camera flame.npz --flame ~/flame
"""

EPILOG = (
    "-o FILE.mp4 / FILE.gif writes a video; -o DIR (no suffix) writes frame_00000.png ... one per frame; "
    "--ply-seq DIR writes one posed standard 3DGS PLY per frame (world Gaussians, no binding) for other engines. "
    "The FLAME model must be the one the head was made with (its sha256 is stored in the PLY); --force overrides."
)


def animate_command(
    head: Path = typer.Argument(..., help="Head PLY made by avatar (Gaussians bound to FLAME).", show_default=False),
    expr: List[Path] = typer.Option(
        ...,
        "--expr",
        "-e",
        help="Expression .npz, or a folder of them; repeat to play several in order.",
        show_default=False,
    ),
    out: Optional[Path] = typer.Option(
        None, "--output", "-o", help="OUT.mp4, OUT.gif, or a folder for PNG frames.", show_default=False
    ),
    ply_seq: Optional[Path] = typer.Option(
        None, "--ply-seq", help="Folder for one posed 3DGS PLY per frame.", show_default=False
    ),
    flame: Optional[Path] = FlameOpt,
    camera: str = typer.Option(
        "front",
        "--camera",
        help="front, orbit (one turn over the animation), photo (the fit stored in the head), or a flame.npz fit (its viewpoint and image size).",
    ),
    yaw: float = typer.Option(0.0, "--yaw", help="Camera yaw in degrees (front: fixed; orbit: start)."),
    pitch: float = typer.Option(0.0, "--pitch", help="Camera pitch in degrees (positive: from above)."),
    size: Optional[int] = typer.Option(
        None,
        "--size",
        help="Output size in pixels (square for front/orbit). Default 512, or the photo's size for fit cameras.",
        show_default=False,
    ),
    fps: Optional[float] = typer.Option(
        None, "--fps", help="Frames per second. Default: the first file's fps, else 30.", show_default=False
    ),
    duration: float = typer.Option(
        2.0, "--duration", help="Seconds each single-frame target takes (neutral -> target -> neutral)."
    ),
    background: str = BackgroundOpt,
    backend: str = BackendOpt,
    device: str = DeviceOpt,
    force: bool = typer.Option(False, "--force", help="Animate even if the FLAME model differs from the head's."),
) -> int:
    from avatarcli.animate.expressions import load_expressions
    from avatarcli.render.views import parse_background
    from avatarcli.stages.animate import AnimateConfig, animate, plan_outputs

    config = AnimateConfig(
        camera=camera,
        yaw=yaw,
        pitch=pitch,
        size=size,
        fps=fps,
        duration=duration,
        background=parse_background(background),
        backend=backend,
        device=device,
        force=force,
    )
    # validate everything cheap before the FLAME model is loaded (animate() checks the rest in order:
    # camera file, size, device/backend, the head PLY, then FLAME)
    existing_inputs([head])
    plan_outputs(out, ply_seq)
    clips = load_expressions(expr)
    for c in clips:
        if c.ignored:
            info(f"{c.path}: ignoring {', '.join(c.ignored)} (not used to re-pose a head)")
    with progress() as p:
        task = p.add_task("animate", total=None, status="")

        def tick(i: int, n: int) -> None:
            p.update(task, completed=i, total=n, status="")

        result = animate(head, clips, config, out=out, ply_seq=ply_seq, flame=flame, progress=tick)
    for o in result.outputs:
        info(f"wrote {o} ({result.n_frames} frames at {result.fps:g} fps)")
    return 0


animate_command.__doc__ = HELP


def register(app: typer.Typer) -> None:
    app.command("animate", no_args_is_help=True, epilog=EPILOG)(animate_command)
