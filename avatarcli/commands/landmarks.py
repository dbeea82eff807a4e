"""`avatar landmarks`: 68 iBUG face landmarks of each photo -> landmarks.npz."""

from __future__ import annotations

import math
from pathlib import Path
from typing import List, Optional

import numpy as np
import typer

from avatarcli.commands.common import DeviceOpt, error_line, output_for
from avatarcli.errors import InputError
from avatarcli.io.atomic import check_output_path
from avatarcli.io.images import MIN_SIDE, check_image, load_image
from avatarcli.landmarks.artifact import write_landmarks
from avatarcli.landmarks.points import find_points_file, read_points
from avatarcli.progress import console, info, progress


def parse_bbox(text: str) -> tuple[float, float, float, float]:
    """'x0,y0,x1,y1' -> 4 floats (InputError when malformed)."""
    parts = [p for p in text.replace(" ", ",").split(",") if p]
    try:
        vals = tuple(float(p) for p in parts)
    except ValueError:
        vals = ()
    if len(vals) != 4 or not all(math.isfinite(v) for v in vals):
        raise InputError(f"--bbox {text!r}: expected four numbers x0,y0,x1,y1 (pixels)")
    x0, y0, x1, y1 = vals
    if not (x1 > x0 and y1 > y0):
        raise InputError(f"--bbox {text!r}: needs x1 > x0 and y1 > y0")
    return vals  # type: ignore[return-value]


def landmarks_command(
    inputs: List[Path] = typer.Argument(..., help="Photos (JPEG, PNG, WebP, ...).", show_default=False),
    output: Path = typer.Option(
        ..., "--output", "-o", help="landmarks.npz for one photo; a folder of NAME.npz for several.", show_default=False
    ),
    bbox: Optional[str] = typer.Option(
        None,
        "--bbox",
        help="Face box x0,y0,x1,y1 in original-photo pixels: skips face detection. Applies to every photo given.",
        show_default=False,
    ),
    landmarks: Optional[Path] = typer.Option(
        None,
        "--landmarks",
        "-l",
        help="Your own 68 points (.npy/.txt/.pts/.npz, x y in pixels): a file for one photo, a folder of NAME.<ext> for several. No model is loaded.",
        show_default=False,
    ),
    face_index: Optional[int] = typer.Option(
        None,
        "--face-index",
        min=0,
        help="With several faces: the K-th by box size, largest first (default 0, the largest).",
        show_default=False,
    ),
    detector_kind: str = typer.Option(
        "auto",
        "--detector",
        help="auto: FAN when its weights are present, else dlib when installed. fan: face-alignment's FAN + S3FD "
        "(`avatar weights fetch fan-2d s3fd`). dlib: dlib's HOG + 68-point predictor, from the package index "
        "(`pip install 'avatarcli[dlib]'`; non-commercial licence, see `avatar weights list`).",
    ),
    device: str = DeviceOpt,
    max_side: int = typer.Option(
        2048,
        "--max-side",
        min=32,
        help="Photos with a longer side are downscaled for detection; landmarks are always in original pixels.",
    ),
    flip: bool = typer.Option(
        False, "--flip", help="Also run the mirrored face and average the heatmaps (2x the network time)."
    ),
) -> int:
    """Find 68 face landmarks (iBUG layout) in each photo with face-alignment's 2D FAN and its S3FD
    face detector, or with dlib (--detector), and write landmarks.npz (points in original-photo
    pixels, x right, y down).

    Several faces: the largest is used unless --face-index is given. Every photo is checked before
    any model is loaded. In a batch, a bad photo (unreadable, no face) is reported and the others
    finish (exit 1); a single bad photo exits 2; missing weights exit 3 (`avatar weights fetch`).

    \b
    Examples:
      avatar landmarks photo.jpg -o photo.landmarks.npz
      avatar landmarks photos/*.jpg -o landmarks/
      avatar landmarks group.jpg -o me.npz --face-index 1
      avatar landmarks photo.jpg -o photo.npz --bbox 410,220,890,760
      avatar landmarks photo.jpg -o photo.npz --landmarks my_points.pts
      avatar landmarks photo.jpg -o photo.npz --detector dlib    # no hub weights needed
    """
    from avatarcli.batch import Batch, exit_code
    from avatarcli.landmarks.choose import DETECTORS

    if detector_kind not in DETECTORS:
        raise InputError(f"--detector {detector_kind!r}: expected one of {', '.join(DETECTORS)}")
    box = parse_bbox(bbox) if bbox is not None else None
    if landmarks is not None and (box is not None or face_index is not None):
        raise InputError("--landmarks gives the points: it cannot be combined with --bbox or --face-index")
    if box is not None and face_index is not None:
        raise InputError("--bbox gives the face: it cannot be combined with --face-index")
    if max_side < MIN_SIDE:
        raise InputError(f"--max-side {max_side}: must be at least {MIN_SIDE}")
    outs = [check_output_path(p) for p in output_for(inputs, output, ".npz")]
    batch = len(inputs) > 1
    if landmarks is not None:
        if batch and not landmarks.is_dir():
            raise InputError(
                "with several photos, --landmarks must be a folder of NAME.npz/.npy/.pts/.txt", path=landmarks
            )
        if not batch and not landmarks.exists():
            raise InputError("landmarks file not found", path=landmarks)

    def report(i: int, e: BaseException) -> None:
        if batch:  # one photo: its error is raised at the end (cli.main prints it)
            console.print(f"[red]error:[/red] {error_line(e)}", soft_wrap=True)

    policy = Batch(inputs, on_failure=report)

    def check(p: Path) -> np.ndarray | None:
        check_image(p)
        if landmarks is None:
            return None
        return read_points(landmarks if not landmarks.is_dir() else find_points_file(landmarks, p.stem))

    # 1. every input checked before any model is loaded
    points = {i: policy.check(i, lambda: check(p), path=p) for i, p in enumerate(inputs)}
    todo = policy.pending()

    # 2. models (missing weights: exit 3 before any work)
    detector = None
    if todo and landmarks is None:
        from avatarcli.landmarks.choose import choose_detector, load_detector

        if flip and choose_detector(detector_kind, need_detector=box is None) == "dlib":
            raise InputError("--flip averages FAN heatmaps: it does not apply to the dlib detector")
        detector = load_detector(detector_kind, device, need_detector=box is None, flip=flip)

    # 3. the photos, going on past failures
    from avatarcli.stages.landmarks import photo_landmarks

    def one(i: int):
        image = load_image(inputs[i], max_side=max_side)
        lm = photo_landmarks(image, detector, points=points[i], bbox=box, face_index=face_index)
        write_landmarks(outs[i], lm)
        return lm

    done = []
    with progress() as bar:
        task = bar.add_task("landmarks", total=len(todo), status="")
        for i in todo:
            bar.update(task, status=inputs[i].name)
            lm = policy.attempt(i, lambda: one(i))
            if lm is not None:
                done.append((inputs[i], outs[i], lm))
            bar.advance(task)
    for src, dst, lm in done:
        info(
            f"{src} -> {dst} (face box {', '.join(f'{v:.0f}' for v in lm.bbox)}; mean score {float(lm.scores.mean()):.2f})"
        )
    if policy.failed and batch:
        console.print(f"{len(policy.failed)} of {len(inputs)} photo(s) failed; {len(done)} written", soft_wrap=True)
    return exit_code(list(policy.failed.values()), single=not batch)


def register(app: typer.Typer) -> None:
    app.command("landmarks", no_args_is_help=True)(landmarks_command)
