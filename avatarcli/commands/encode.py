"""`avatar encode`: aligned face crop -> VAE latents, CLIP image embedding, face-region mask."""

from __future__ import annotations

from pathlib import Path
from typing import List

import typer

from avatarcli.commands.common import DeviceOpt, error_line, existing_inputs, output_for
from avatarcli.diffusion.crop import align_face
from avatarcli.diffusion.encode import load_encode_models
from avatarcli.diffusion.features import REGION_NAMES, write_features
from avatarcli.errors import InputError
from avatarcli.io.atomic import check_output_path
from avatarcli.io.hashing import sha256_file
from avatarcli.io.images import check_image, load_image
from avatarcli.landmarks.artifact import read_landmarks
from avatarcli.landmarks.points import check_photo_file, is_landmarks_artifact, read_points
from avatarcli.progress import console, info, progress
from avatarcli.stages.encode import EncodeJob, encode_job, landmarks_for


def encode_command(
    images: List[Path] = typer.Argument(..., help="Photos (jpg/png/...).", show_default=False),
    landmarks: Path = typer.Option(
        ...,
        "--landmarks",
        "-l",
        help="Landmarks for one photo (landmarks.npz, or bare 68 points: .npy/.txt/.csv/.pts); a folder of NAME.<ext> for several.",
        show_default=False,
    ),
    output: Path = typer.Option(
        ...,
        "--output",
        "-o",
        help="features.safetensors for one photo; a folder of NAME.safetensors for several.",
        show_default=False,
    ),
    device: str = DeviceOpt,
    size: int = typer.Option(512, "--size", help="Side of the aligned square face crop in pixels (multiple of 8)."),
    force: bool = typer.Option(
        False, "--force", help="Use landmarks even when they were computed on a different image file."
    ),
) -> int:
    """Encode the aligned face crop of each photo: diffusion VAE latents, CLIP image embedding and a
    face / hair / neck / background mask from a face parser (`denoise` uses them).

    Needs the pinned models sd-image-variations and face-parsing (`avatar weights fetch`).
    Landmarks are in the original photo's pixels; the photo's sha256 must match the one the
    landmarks were computed on (--force overrides).

    \b
    Examples:
      avatar encode face.jpg --landmarks face.landmarks.npz -o face.features.safetensors
      avatar encode photos/*.jpg --landmarks landmarks/ -o features/
      avatar encode face.jpg -l face.npz -o face.safetensors --device cpu --size 256
    """
    from avatarcli.batch import Batch, exit_code

    # 1. every input and output checked before any model is touched
    if size % 8 != 0 or not 64 <= size <= 2048:
        raise InputError(f"--size {size}: expected a multiple of 8 between 64 and 2048")
    existing_inputs(images)
    several = len(images) > 1
    outs = [check_output_path(p) for p in output_for(images, output, ".safetensors")]
    if not landmarks.exists():
        raise InputError("landmarks file or folder not found", path=landmarks)
    if several and landmarks.is_file():
        raise InputError("several images need --landmarks to be a folder of NAME.npz files", path=landmarks)

    def report(i: int, e: BaseException) -> None:
        if several:  # one photo: its error is raised at the end (cli.main prints it)
            console.print(f"[red]error:[/red] {error_line(e)}", soft_wrap=True)

    def check(img: Path, out: Path) -> EncodeJob:
        check_image(img)
        lm_path = landmarks_for(img, landmarks, several)
        sha = sha256_file(img)
        if is_landmarks_artifact(lm_path):  # made by `avatar landmarks`: it names its photo
            lm = read_landmarks(lm_path)
            check_photo_file(lm_path, lm, img.name, sha, force)
        else:  # bare points (.npy/.txt/.csv/.pts/.npz), the same reader as `avatar landmarks --landmarks`
            from avatarcli.landmarks.detect import landmarks_from_points

            lm = landmarks_from_points(load_image(img), read_points(lm_path))
        try:
            align_face(lm.landmarks, size)  # degenerate points (eyes and mouth coincide) fail here, not later
        except ValueError as e:
            raise InputError(f"cannot align the face crop: {e}", path=lm_path) from None
        return EncodeJob(img, lm_path, out, lm, sha)

    policy = Batch(images, on_failure=report)
    jobs = {i: policy.check(i, lambda: check(img, out), path=img) for i, (img, out) in enumerate(zip(images, outs))}
    todo = policy.pending()

    # 2. both models resolved (MissingModelError, exit 3, nothing written) before loading either
    from avatarcli.device import resolve_device

    models = load_encode_models(resolve_device(device)) if todo else None

    # 3. encode and write, one atomic file per photo, going on past failures
    def one(job: EncodeJob):
        assert models is not None  # loaded: some job is left
        feats = encode_job(job, models, size, force)
        write_features(job.output, feats)
        return feats

    with progress() as bar:
        task = bar.add_task("encode", total=len(todo), status=f"{len(todo)} photo(s)")
        for i in todo:
            job = jobs[i]
            assert job is not None
            feats = policy.attempt(i, lambda: one(job))
            bar.advance(task)
            if feats is None:
                continue
            frac = [float((feats.mask_crop == r).mean()) for r in range(len(REGION_NAMES))]
            regions = ", ".join(f"{n} {100 * f:.0f}%" for n, f in zip(REGION_NAMES, frac) if n != "background")
            info(f"{job.image} -> {job.output}: {size} px crop ({regions})")
    if policy.failed and several:
        console.print(f"{len(policy.failed)} of {len(images)} photo(s) failed")
    return exit_code(list(policy.failed.values()), single=not several)


def register(app: typer.Typer) -> None:
    app.command("encode", no_args_is_help=True)(encode_command)
