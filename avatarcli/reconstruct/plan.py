"""Planning a reconstruct run: its settings, which photos, where each head goes, and the checks
made before any model is loaded (outputs writable, every photo and landmarks file readable)."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from avatarcli.batch import Batch, output_paths, wants_folder
from avatarcli.errors import AvatarError, EnvironmentProblem, InputError
from avatarcli.gan.prior import PRIORS
from avatarcli.io.atomic import check_output_path
from avatarcli.io.images import check_image, load_image
from avatarcli.landmarks.points import find_points_file, given_landmarks

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")


@dataclass
class ReconstructConfig:
    """Settings of one reconstruct run (shared by every photo of the batch).

    None for `steps` / `n_gaussians` / `rounds` means the stage's own default."""

    rounds: int | None = None  # diffusion refinement rounds (None: the denoise stage's default)
    no_diffusion: bool = False  # skip encode + diffusion: input-view fit only
    device: str = "auto"
    seed: int = 0
    flame: Path | None = None  # model file or folder; None -> $AVATAR_FLAME
    max_side: int = 2048  # photos are downscaled to this long side for the stages
    face_index: int | None = None  # several faces: which one (default: the largest)
    detector: str = "auto"  # landmark detector: auto | fan | dlib (avatarcli.landmarks.choose)
    steps: int | None = None  # Gaussian fitting steps per fit (input view / each round)
    n_gaussians: int | None = None  # Gaussians seeded on the FLAME surface
    mouth: bool = True  # a mouth interior (init-gaussians' default share of the Gaussians); False: none
    n_shape: int = 100  # FLAME coefficients fitted
    n_expr: int = 50
    encode_size: int = 512  # face crop size of the encode stage
    prior: str = "diffusion"  # what the rounds fit the unseen sides to: diffusion | gan | gan+diffusion
    gan_weights: Path | None = None  # converted GAN generator (.safetensors); None: the registry's panohead
    gan_w_steps: int = 500  # the invert-gan stage's W-space steps (avatarcli.gan.invert.InversionConfig)
    gan_pti_steps: int = 350  # and its pivotal-tuning steps

    def check(self) -> None:
        """InputError for an unknown prior or a GAN prior with no rounds to use it (--no-diffusion)."""

        if self.prior not in PRIORS:
            raise InputError(f"prior {self.prior!r}: expected one of {', '.join(PRIORS)}", setting="prior")
        if self.no_diffusion and "gan" in self.prior:
            raise InputError(
                f"no_diffusion fits the input view only: the {self.prior} prior would not be used (it needs no "
                "diffusion weights; leave that option out)",
                setting="no_diffusion",
            )

    @property
    def rounds_run(self) -> bool:
        """Whether the denoise stage runs refinement rounds (rounds None: the stage's default, > 0)."""
        return not self.no_diffusion and (self.rounds is None or self.rounds > 0)

    @property
    def use_diffusion(self) -> bool:
        """The diffusion models are used (encode's features, the face-parsing region, the denoiser)."""
        return not self.no_diffusion and "diffusion" in self.prior

    @property
    def needs_denoiser(self) -> bool:
        return self.use_diffusion and self.rounds_run

    @property
    def use_gan(self) -> bool:
        """The invert-gan stage runs and its inversion is the rounds' prior (alone or before diffusion)."""
        return "gan" in self.prior and self.rounds_run


@dataclass
class Job:
    """One photo to reconstruct."""

    name: str  # the photo's stem: names the output and the work folder
    image: Path
    output: Path  # the head's .ply
    landmarks: Path | None = None  # the user's landmarks.npz (skip detection)
    mask: Path | None = None  # the user's head-region matte (white = head), instead of the computed one


def _is_image_name(p: Path) -> bool:
    return p.suffix.lower() in IMAGE_SUFFIXES


def expand_images(images: Sequence[str | Path], notes: list[str] | None = None) -> tuple[list[Path], bool]:
    """Photo paths and folders -> photo files (a folder: its jpg/jpeg/png/webp files, sorted by
    name, other files skipped with a note). Returns (files, is_batch): a folder is always a batch."""
    files: list[Path] = []
    batch = len(images) > 1
    for raw in images:
        p = Path(raw)
        if not p.exists():
            raise InputError("file not found", path=p)
        if p.is_dir():
            batch = True
            found, skipped = [], []
            for q in sorted(p.iterdir(), key=lambda x: x.name):
                if q.name.startswith("."):
                    continue
                if q.is_file() and _is_image_name(q):
                    found.append(q)
                else:
                    skipped.append(q.name)
            if skipped and notes is not None:
                more = f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""
                notes.append(
                    f"{p}: skipped {len(skipped)} non-image entr{'y' if len(skipped) == 1 else 'ies'} ({', '.join(skipped[:5])}{more})"
                )
            if not found:
                raise InputError(f"no photos ({', '.join(IMAGE_SUFFIXES)}) in this folder", path=p)
            files.extend(found)
        else:
            files.append(p)
    if not files:
        raise InputError("no input photos given")
    return files, batch


def attach_masks(jobs: list[Job], mask: str | Path | None) -> list[Job]:
    """`--mask`: one image for one photo, or a folder of NAME.png (a photo without one gets the computed
    region). InputError when the path is missing or one file is given for several photos."""
    if mask is None:
        return jobs
    mp = Path(mask)
    if not mp.exists():
        raise InputError("mask: file or folder not found", path=mp, setting="mask")
    if mp.is_dir():
        for j in jobs:
            j.mask = mp / f"{j.name}.png" if (mp / f"{j.name}.png").is_file() else None
    elif len(jobs) > 1:
        raise InputError(
            "mask is one file but there are several photos: give a folder of NAME.png", path=mp, setting="mask"
        )
    else:
        jobs[0].mask = mp
    return jobs


def plan_batch(
    images: Sequence[str | Path],
    out: str | Path,
    landmarks: str | Path | None = None,
    notes: list[str] | None = None,
) -> list[Job]:
    """Decide the jobs: one photo -> `out` is the head's .ply (or a folder: out/NAME.ply);
    several photos or a folder -> `out` is a folder of NAME.ply (avatarcli.batch.output_paths).
    `landmarks`: a landmarks file (one photo; .npz/.npy/.txt/.csv/.pts, avatarcli.landmarks.points)
    or a folder of NAME.<one of those>. Usage problems raise
    InputError (exit 2)."""
    files, batch = expand_images(images, notes)
    out = Path(out)
    names = [f.stem for f in files]
    if not (batch or wants_folder(out)) and out.suffix.lower() != ".ply":
        raise InputError(
            f"the output should be a .ply file (got {out.suffix!r}) or a folder (`out` DIR/)",
            path=out,
            mentions=("out",),
        )
    if batch and out.suffix.lower() == ".ply" and not out.exists():
        raise InputError(
            "several photos need an output folder (`out` DIR/), not a .ply file", path=out, mentions=("out",)
        )
    outputs = output_paths(names, out, ".ply", several=batch)
    lms: list[Path | None] = [None] * len(files)
    if landmarks is not None:
        lp = Path(landmarks)
        if not lp.exists():
            raise InputError("landmarks: file or folder not found", path=lp, setting="landmarks")
        if lp.is_dir():
            lms = [_points_file(lp, n) for n in names]
        elif len(files) > 1:
            raise InputError(
                "landmarks is one file but there are several photos: give a folder of NAME.<ext> files",
                path=lp,
                setting="landmarks",
            )
        else:
            lms = [lp]
    return [Job(n, f, o, lm) for n, f, o, lm in zip(names, files, outputs, lms)]


def _points_file(folder: Path, name: str) -> Path:
    """folder/NAME.<any landmarks suffix>; NAME.npz when there is none (that job then fails alone)."""
    try:
        return find_points_file(folder, name)
    except InputError:
        return folder / f"{name}.npz"


def _nearest_existing(p: Path) -> Path:
    p = p.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_writable_folder(folder: Path, what: str = "output folder") -> None:
    """Fail before any work if `folder` (or, when it does not exist yet, the folder it would be
    created in) cannot take new files: tried by creating and removing a probe file."""
    base = _nearest_existing(folder)
    if not base.is_dir():
        raise InputError(f"{what}: {base} is a file, not a folder", path=folder)
    try:
        fd, probe = tempfile.mkstemp(prefix=".avatar-probe.", dir=base)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise EnvironmentProblem(f"{what} is not writable ({e.strerror or e})", path=folder) from None


def check_outputs(jobs: Sequence[Job], workdir: Path | None = None) -> None:
    """Every output path usable and every output / work folder writable (raises; before any work)."""
    for j in jobs:
        if j.output.is_dir():
            raise InputError("output path is a folder, expected a .ply file name", path=j.output)
    for folder in sorted({j.output.parent for j in jobs}, key=str):
        check_writable_folder(folder)
    for j in jobs:
        check_output_path(j.output)
    if workdir is not None:
        if workdir.exists() and not workdir.is_dir():
            raise InputError("workdir exists and is not a folder", path=workdir, setting="workdir")
        check_writable_folder(workdir, "work folder")


def validate_job(job: Job, max_side: int = 2048, force: bool = False) -> None:
    """Open the photo fully (header, size limits, a complete decode) and the user's landmarks
    (any format; a landmarks.npz must be this photo's unless `force`); raises the one-line
    InputError / ArtifactError naming the file."""
    check_image(job.image)
    img = load_image(job.image, max_side=min(max_side, 512))
    if job.landmarks is not None:
        given_landmarks(job.landmarks, img, force=force)


def validate_inputs(jobs: Sequence[Job], max_side: int = 2048, force: bool = False) -> dict[str, AvatarError]:
    """Validate every job's inputs (no model loaded): {job name: the error} for the bad ones."""
    batch = Batch(jobs)
    for i, j in enumerate(jobs):
        batch.check(i, lambda: validate_job(j, max_side, force), path=j.image)
    return {jobs[i].name: e for i, e in batch.failed.items() if isinstance(e, AvatarError)}
