"""`avatar track`: a video of a face -> an expression file (FLAME motion per frame) for `animate --expr`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from avatarcli.commands.common import DeviceOpt, FlameOpt
from avatarcli.progress import info, progress, warn


def track_command(
    source: Path = typer.Argument(
        ..., help="A video (mp4, mov, webm, mkv, avi, gif) or a folder of frames (png, jpg, ...).", show_default=False
    ),
    output: Path = typer.Option(..., "--output", "-o", help="The expression file to write (.npz).", show_default=False),
    flame: Optional[Path] = FlameOpt,
    landmarks: Optional[Path] = typer.Option(
        None,
        "--landmarks",
        "-l",
        help="Your own points per frame: .npy/.npz [T, 68, 2] (a NaN row = a lost frame) or a folder of one "
        "point file per frame (.npy/.txt/.pts/.npz, name order). No landmark model is loaded.",
        show_default=False,
    ),
    fps: Optional[float] = typer.Option(
        None,
        "--fps",
        min=1e-3,
        help="Frame rate of the clip (default: the video's; 30 for a folder).",
        show_default=False,
    ),
    face_index: Optional[int] = typer.Option(
        None,
        "--face-index",
        min=0,
        help="The face to follow, by size in the first frame (0 = largest).",
        show_default=False,
    ),
    detector_kind: str = typer.Option(
        "auto",
        "--detector",
        help="auto: FAN when its weights are present, else dlib when installed. fan: face-alignment's FAN + S3FD. "
        "dlib: dlib's HOG + 68-point predictor (`pip install 'avatarcli[dlib]'`).",
    ),
    smooth: float = typer.Option(
        1.0, "--smooth", min=0.0, help="Strength of the temporal prior (0: frames fitted independently)."
    ),
    n_expr: int = typer.Option(50, "--n-expr", min=0, help="Expression coefficients fitted per frame."),
    gaze: bool = typer.Option(
        True, "--gaze/--no-gaze", help="Fit the eyes' rotation per frame from the irises seen in the frames."
    ),
    device: str = DeviceOpt,
    json_out: bool = typer.Option(
        False, "--json", help="Print a JSON summary (per-frame landmark error, lost frames) on stdout."
    ),
) -> int:
    """Track the face of a video with FLAME and write an expression file that `avatar animate --expr` plays.

    Landmarks in every frame (the face is followed from frame to frame, so another face never takes
    over; frames without it are interpolated and reported), then ONE fit over the whole clip: the
    identity shared by all frames, expression, jaw, neck and head pose per frame, with a temporal
    prior against jitter that still follows fast moves. Then the gaze (eyes_pose) per frame from
    the irises inside the eye contours; closed eyes follow their neighbours. The head's translation is stored relative
    to its median place in the video.

    \b
    Examples:
      avatar track me.mp4 -o me.npz --flame ~/flame
      avatar animate head.ply --expr me.npz -o me_as_head.mp4 --flame ~/flame
      avatar track frames/ -o clip.npz --fps 25 --landmarks frames_landmarks/
      avatar track talk.mov -o talk.npz --json > talk.json
      avatar track me.mp4 -o me.npz --detector dlib                  # no hub weights needed
    """
    from avatarcli.stages.track import track_video
    from avatarcli.track.fit import TrackConfig

    cfg = TrackConfig(smooth=smooth, n_expr=n_expr, gaze=gaze)
    with progress() as bar:
        tasks: dict[str, object] = {}

        def tick(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total, status="")
            bar.update(tasks[stage], completed=done, total=total)  # type: ignore[arg-type]

        result = track_video(
            source, output, flame=flame, landmarks=landmarks, fps=fps, face_index=face_index, config=cfg,
            detector=None if landmarks is not None else detector_kind,
            device=device, progress=tick,
        )  # fmt: skip
    s = result.summary()
    if result.lost:
        shown = ", ".join(map(str, result.lost[:10])) + (", ..." if len(result.lost) > 10 else "")
        warn(f"{source}: no face in {len(result.lost)} of {result.n_frames} frame(s) ({shown}): interpolated")
    info(
        f"{source} -> {result.output}: {result.n_frames} frames at {result.fps:g} fps, mean landmark error "
        f"{s['mean_landmark_error_px']:.2f} px (worst frame {s['max_landmark_error_px']:.2f} px)"
    )
    if json_out:
        typer.echo(json.dumps(s))
    return 0


def register(app: typer.Typer) -> None:
    app.command("track", no_args_is_help=True)(track_command)
