"""`avatar reconstruct` as a library: photos in, one FLAME-bound Gaussian head (PLY) per photo out.

    jobs = plan_batch([Path("photos/")], Path("heads/"))        # what to do, where outputs go
    errors = validate_inputs(jobs)                               # every photo opened BEFORE any model loads
    result = run_batch(jobs, ReconstructConfig(rounds=0), workdir=Path("work"))

Per photo the stages run in order, models loaded once for the whole batch:

    landmarks -> fit-flame -> encode -> init-gaussians -> denoise -> NAME.ply

* `landmarks`: the detector, or the user's own landmarks.npz (`Job.landmarks`).
  Landmarks are in ORIGINAL photo pixels; the later stages work on the photo
  downscaled to `max_side` (LoadedImage.scale), so the fit uses the scaled points.
* `encode` (and the diffusion denoiser) are skipped with `no_diffusion`:
  denoise then fits the input view only.
* With a work folder, each intermediate artifact goes to WORKDIR/NAME/
  (landmarks.npz, flame.npz, features.safetensors, init.ply) with a sidecar
  recording the content hashes of its inputs (avatarcli.workdir); a re-run
  reuses every artifact whose inputs are unchanged. `force` redoes them all.

One photo failing (an AvatarError or any other exception) is recorded in its
JobResult and the batch goes on. Problems of the whole run (missing FLAME or
weights, no CUDA, an unwritable output folder) raise before any photo is
processed. Outputs are written atomically: a failed or killed job leaves no
partial file under its output name.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from avatarcli.errors import AvatarError, EnvironmentProblem, InputError, MissingModelError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
STAGES = ("landmarks", "fit-flame", "encode", "init-gaussians", "denoise")
# intermediate artifact of each stage in WORKDIR/NAME/
ARTIFACTS = {
    "landmarks": "landmarks.npz",
    "fit-flame": "flame.npz",
    "encode": "features.safetensors",
    "init-gaussians": "init.ply",
}
DETECTOR_MODELS = ("fan-2d", "s3fd")
ENCODE_MODELS = ("sd-image-variations", "face-parsing")
DENOISER_MODELS = ("sd-image-variations",)


# ----------------------------------------------------------------------------- configuration


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
    steps: int | None = None  # Gaussian fitting steps per fit (input view / each round)
    n_gaussians: int | None = None  # Gaussians seeded on the FLAME surface
    n_shape: int = 100  # FLAME coefficients fitted
    n_expr: int = 50
    encode_size: int = 512  # face crop size of the encode stage

    @property
    def use_diffusion(self) -> bool:
        return not self.no_diffusion

    @property
    def needs_denoiser(self) -> bool:
        return self.use_diffusion and (self.rounds is None or self.rounds > 0)


@dataclass
class Job:
    """One photo to reconstruct."""

    name: str  # the photo's stem: names the output and the work folder
    image: Path
    output: Path  # the head's .ply
    landmarks: Path | None = None  # the user's landmarks.npz (skip detection)


@dataclass
class JobResult:
    name: str
    image: Path
    output: Path
    status: str = "pending"  # "done" | "failed" | "skipped"
    stage_times: dict[str, float] = field(default_factory=dict)  # seconds per stage run (reused: 0)
    reused: list[str] = field(default_factory=list)  # stages whose work-folder artifact was reused
    fit_error_px: float | None = None  # mean landmark reprojection error of the FLAME fit
    poor_fit: bool = False  # fit error above avatarcli.flame.fit.fit_quality's threshold
    error: str | None = None  # the one-line message
    error_stage: str | None = None  # "validate" or a stage name
    exception: BaseException | None = field(default=None, repr=False)
    stats: dict[str, Any] = field(default_factory=dict)  # stage statistics (e.g. denoise PSNR)

    def summary(self) -> dict[str, Any]:
        """The JSON-ready record `--json` prints."""
        return {
            "name": self.name,
            "image": str(self.image),
            "output": str(self.output),
            "status": self.status,
            "stage_times": {k: round(v, 4) for k, v in self.stage_times.items()},
            "reused": list(self.reused),
            "fit_error_px": None if self.fit_error_px is None else round(float(self.fit_error_px), 4),
            "poor_fit": self.poor_fit,
            "error": self.error,
            "error_stage": self.error_stage,
        }


@dataclass
class BatchResult:
    jobs: list[JobResult]
    seconds: float = 0.0
    model_load_seconds: float = 0.0

    def count(self, status: str) -> int:
        return sum(1 for j in self.jobs if j.status == status)

    @property
    def failed(self) -> list[JobResult]:
        return [j for j in self.jobs if j.status == "failed"]

    def summary(self) -> dict[str, Any]:
        return {
            "format": "avatarcli.reconstruct_summary",
            "version": 1,
            "done": self.count("done"),
            "failed": self.count("failed"),
            "skipped": self.count("skipped"),
            "seconds": round(self.seconds, 3),
            "model_load_seconds": round(self.model_load_seconds, 3),
            "images": [j.summary() for j in self.jobs],
        }


@dataclass
class Event:
    """What run_batch reports to `on_event` (progress bars, logs)."""

    kind: str  # "models" | "job_start" | "stage_start" | "stage_end" | "step" | "job_end"
    index: int = -1  # job index in the batch (-1: not about one job)
    job: Job | None = None
    stage: str | None = None
    seconds: float = 0.0
    reused: bool = False
    result: JobResult | None = None
    info: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------- planning


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


def _wants_folder(out: Path) -> bool:
    return out.is_dir() or str(out).endswith(("/", os.sep)) or out.suffix == ""


def plan_batch(
    images: Sequence[str | Path],
    out: str | Path,
    landmarks: str | Path | None = None,
    notes: list[str] | None = None,
) -> list[Job]:
    """Decide the jobs: one photo -> `out` is the head's .ply (or a folder: out/NAME.ply);
    several photos or a folder -> `out` is a folder of NAME.ply. `landmarks`: a landmarks.npz
    (one photo) or a folder of NAME.npz. Usage problems raise InputError (exit 2)."""
    files, batch = expand_images(images, notes)
    out = Path(out)
    names = [f.stem for f in files]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise InputError(
            f"several photos are named {', '.join(dup)}: their outputs would overwrite each other (rename them)"
        )
    if batch or _wants_folder(out):
        if out.exists() and not out.is_dir():
            raise InputError("several photos need an output folder (-o DIR/), and this is a file", path=out)
        if batch and out.suffix.lower() == ".ply" and not out.exists():
            raise InputError("several photos need an output folder (-o DIR/), not a .ply file", path=out)
        outputs = [out / f"{n}.ply" for n in names]
    else:
        if out.suffix.lower() != ".ply":
            raise InputError(f"the output should be a .ply file (got {out.suffix!r}) or a folder (-o DIR/)", path=out)
        outputs = [out]
    lms: list[Path | None] = [None] * len(files)
    if landmarks is not None:
        lp = Path(landmarks)
        if not lp.exists():
            raise InputError("--landmarks: file or folder not found", path=lp)
        if lp.is_dir():
            lms = [lp / f"{n}.npz" for n in names]
        elif len(files) > 1:
            raise InputError("--landmarks is one file but there are several photos: give a folder of NAME.npz", path=lp)
        else:
            lms = [lp]
    return [Job(n, f, o, lm) for n, f, o, lm in zip(names, files, outputs, lms)]


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
    from avatarcli.io.atomic import check_output_path

    for j in jobs:
        if j.output.is_dir():
            raise InputError("output path is a folder, expected a .ply file name", path=j.output)
    for folder in sorted({j.output.parent for j in jobs}, key=str):
        check_writable_folder(folder)
    for j in jobs:
        check_output_path(j.output)
    if workdir is not None:
        if workdir.exists() and not workdir.is_dir():
            raise InputError("--workdir exists and is not a folder", path=workdir)
        check_writable_folder(workdir, "work folder")


# ----------------------------------------------------------------------------- validation


def validate_job(job: Job, max_side: int = 2048) -> None:
    """Open the photo fully (header, size limits, a complete decode) and the user's landmarks;
    raises the one-line InputError / ArtifactError naming the file."""
    from avatarcli.io.images import check_image, load_image

    check_image(job.image)
    img = load_image(job.image, max_side=min(max_side, 512))
    if job.landmarks is not None:
        from avatarcli.errors import ArtifactError
        from avatarcli.landmarks.artifact import read_landmarks

        lm = read_landmarks(job.landmarks)
        if tuple(lm.image_size) != tuple(img.original_size):
            h, w = lm.image_size
            H, W = img.original_size
            raise ArtifactError(
                f"landmarks are for a {w}x{h} image, but {job.image.name} is {W}x{H}", path=job.landmarks
            )


def validate_inputs(jobs: Sequence[Job], max_side: int = 2048) -> dict[str, AvatarError]:
    """Validate every job's inputs (no model loaded): {job name: the error} for the bad ones."""
    errors: dict[str, AvatarError] = {}
    for j in jobs:
        try:
            validate_job(j, max_side)
        except AvatarError as e:
            errors[j.name] = e
        except Exception as e:  # noqa: BLE001 - a reader crash is still this photo's problem
            errors[j.name] = InputError(f"cannot read ({type(e).__name__}: {e})", path=j.image)
    return errors


# ----------------------------------------------------------------------------- models


@dataclass
class Models:
    """Everything loaded once per batch."""

    device: Any  # torch.device
    flame: Any  # FlameModel
    detector: Any = None  # LandmarkDetector (None: every job brings its landmarks)
    encode: Any = None  # EncodeModels (None: no diffusion)
    denoiser: Any = None  # Denoiser (None: no diffusion rounds)
    ids: dict[str, str] = field(default_factory=dict)  # model name -> revision / override (work-folder keys)


def needed_models(jobs: Sequence[Job], config: ReconstructConfig) -> list[str]:
    """weights.lock names this run needs."""
    names: list[str] = []
    if any(j.landmarks is None for j in jobs):
        names += DETECTOR_MODELS
    if config.use_diffusion:
        names += ENCODE_MODELS
        if config.needs_denoiser:
            names += [n for n in DENOISER_MODELS if n not in names]
    return names


def _model_id(name: str) -> str:
    from avatarcli.weights import get_entry

    entry = get_entry(name)
    ov = os.environ.get(entry.env_var)
    return f"override:{Path(ov).expanduser().resolve()}" if ov else f"{entry.name}@{entry.revision}"


def resolve_models(jobs: Sequence[Job], config: ReconstructConfig) -> list[str]:
    """Check (without loading anything big) that every model the run needs is here:
    the device, the FLAME model, each pinned model. Raises one EnvironmentProblem (exit 3)
    naming all the missing ones and the fix. Returns the needed weights names."""
    from avatarcli.device import resolve_device
    from avatarcli.weights import resolve

    resolve_device(config.device)
    try:
        from avatarcli.flame.locate import locate_flame
    except ImportError:  # pragma: no cover - older layout: load_flame checks on load
        locate_flame = None
    if locate_flame is not None:
        locate_flame(config.flame)
    names = needed_models(jobs, config)
    missing: list[str] = []
    for n in names:
        try:
            resolve(n)
        except MissingModelError:
            missing.append(n)
    if missing:
        if len(missing) == 1:
            resolve(missing[0])  # re-raise its own one-line message
        raise MissingModelError(
            f"models not available: {', '.join(missing)}; run `avatar weights fetch {' '.join(missing)}` "
            "(or point AVATAR_WEIGHTS_<NAME> at local copies)"
        )
    return names


def load_models(jobs: Sequence[Job], config: ReconstructConfig) -> Models:
    """Resolve everything first (exit 3 before any loading), then load each model once."""
    from avatarcli.device import resolve_device
    from avatarcli.flame.model import load_flame

    names = resolve_models(jobs, config)
    device = resolve_device(config.device)
    flame = load_flame(config.flame)
    models = Models(device=device, flame=flame, ids={n: _model_id(n) for n in names})
    if any(j.landmarks is None for j in jobs):
        from avatarcli.landmarks.detect import load_landmark_detector

        models.detector = load_landmark_detector(device=str(device), need_detector=True)
    if config.use_diffusion:
        from avatarcli.diffusion.encode import load_encode_models

        models.encode = load_encode_models(device)
        if config.needs_denoiser:
            from avatarcli.diffusion.denoiser import load_default_denoiser

            models.denoiser = load_default_denoiser(device, vae=models.encode.vae)  # one VAE for both
    return models


# ----------------------------------------------------------------------------- stage settings


def _build(cls, **kw):
    """cls(**kw) keeping only the fields cls has and the values that are not None."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in kw.items() if k in names and v is not None})


def _init_config(config: ReconstructConfig):
    from avatarcli.gaussians.init import InitConfig

    return _build(InitConfig, n_gaussians=config.n_gaussians, seed=config.seed)


def _denoise_config(config: ReconstructConfig, device=None):
    from avatarcli.stages.denoise import DenoiseConfig

    rounds = 0 if config.no_diffusion else config.rounds
    return _build(
        DenoiseConfig, rounds=rounds, steps=config.steps, round_steps=config.steps, seed=config.seed,
        device=None if device is None else str(device),
    )  # fmt: skip


def _settings_repr(obj) -> Any:
    """A stable, hashable description of a config dataclass (for work-folder keys)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: _settings_repr(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [_settings_repr(x) for x in obj]
    if isinstance(obj, (int, float, str, bool)) or obj is None:
        return obj
    return repr(obj)


# ----------------------------------------------------------------------------- one job


class _Stage:
    """Times a stage and reports it; `reused` when its work-folder artifact was taken as is."""

    def __init__(self, runner: "_JobRunner", name: str):
        self.runner, self.name, self.reused = runner, name, False

    def __enter__(self):
        self.t0 = time.perf_counter()
        self.runner.result.error_stage = self.name
        self.runner.emit("stage_start", stage=self.name)
        return self

    def __exit__(self, exc_type, exc, tb):
        dt = time.perf_counter() - self.t0
        if exc_type is None:
            r = self.runner.result
            r.stage_times[self.name] = 0.0 if self.reused else dt
            if self.reused:
                r.reused.append(self.name)
            r.error_stage = None
            self.runner.emit("stage_end", stage=self.name, seconds=dt, reused=self.reused)
        return False


class _JobRunner:
    def __init__(
        self, index: int, job: Job, config: ReconstructConfig, models: Models, workdir: Path | None, force: bool, emit
    ):
        self.index, self.job, self.config, self.models, self.force = index, job, config, models, force
        self.result = JobResult(job.name, job.image, job.output)
        self._emit = emit
        self.wd = None
        if workdir is not None:
            from avatarcli.workdir import WorkDir

            self.wd = WorkDir(Path(workdir) / job.name)

    def emit(self, kind: str, **kw) -> None:
        self._emit(Event(kind, index=self.index, job=self.job, **kw))

    # cache helpers -------------------------------------------------------
    def cached(self, stage: str, key: str, read: Callable[[Path], Any]):
        """The stage's artifact from the work folder when fresh (and readable), else None."""
        if self.wd is None or self.force:
            return None
        name = ARTIFACTS[stage]
        if not self.wd.is_fresh(name, key):
            return None
        try:
            return read(self.wd.path(name))
        except AvatarError:
            self.wd.invalidate(name)
            return None

    def store(self, stage: str, key: str, write: Callable[[Path], Any]) -> Path | None:
        if self.wd is None:
            return None
        name = ARTIFACTS[stage]
        self.wd.invalidate(name)
        write(self.wd.path(name))
        self.wd.mark_done(name, key)
        return self.wd.path(name)

    # the pipeline --------------------------------------------------------
    def run(self) -> JobResult:
        import numpy as np
        import torch

        from avatarcli.io.images import load_image
        from avatarcli.workdir import stage_key

        cfg, models, job = self.config, self.models, self.job
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed & 0xFFFFFFFF)
        img = load_image(job.image, max_side=cfg.max_side)

        # landmarks (original photo pixels)
        from avatarcli.landmarks.artifact import read_landmarks, write_landmarks

        with _Stage(self, "landmarks") as st:
            if job.landmarks is not None:
                lm = read_landmarks(job.landmarks)
                key = stage_key(stage="landmarks", v=1, given=job.landmarks)
                st.reused = False
            else:
                key = stage_key(
                    stage="landmarks", v=1, image=img.sha256, face_index=cfg.face_index,
                    detector=[models.ids.get(n) for n in DETECTOR_MODELS],
                )  # fmt: skip
                lm = self.cached("landmarks", key, read_landmarks)
                if lm is not None:
                    st.reused = True
                else:
                    from avatarcli.landmarks.detect import detect_landmarks

                    lm = detect_landmarks(img, models.detector, face_index=cfg.face_index)
            lm_path = (
                self.store("landmarks", key, lambda p: write_landmarks(p, lm))
                if not st.reused
                else self.wd.path(ARTIFACTS["landmarks"])
            )
        # working-image pixels (the photo as the stages see it, downscaled to max_side)
        lm_work = dataclasses.replace(
            lm,
            image_size=img.size,
            landmarks=img.to_working(lm.landmarks),
            bbox=img.to_working(lm.bbox.reshape(2, 2)).reshape(4),
        )
        lm_key = stage_key(lm=lm_path) if lm_path is not None else key

        # FLAME fit (working-image pixels)
        from avatarcli.flame.fit import FitConfig, fit_flame, read_flame_fit, write_flame_fit

        fit_cfg = FitConfig(n_shape=cfg.n_shape, n_expr=cfg.n_expr)
        with _Stage(self, "fit-flame") as st:
            key = stage_key(
                stage="fit-flame", v=1, landmarks=lm_key, flame=models.flame.sha256, size=list(img.size),
                scale=img.scale, fit=_settings_repr(fit_cfg),
            )  # fmt: skip
            fit = self.cached("fit-flame", key, read_flame_fit)
            if fit is not None:
                st.reused = True
            else:
                fit = fit_flame(models.flame, [lm_work], fit_cfg, models.device)[0]
                self.store("fit-flame", key, lambda p: write_flame_fit(p, fit))
        from avatarcli.flame.fit import fit_quality

        self.result.fit_error_px, self.result.poor_fit = fit_quality(
            fit, lm_work.landmarks, fit_cfg.poor_fit_px, fit_cfg.poor_fit_frac
        )
        fit_key = stage_key(fit=self.wd.path(ARTIFACTS["fit-flame"])) if self.wd is not None else key

        # encode (face crop features; skipped without diffusion)
        features = None
        if cfg.use_diffusion:
            from avatarcli.diffusion.encode import encode_face
            from avatarcli.diffusion.features import read_features, write_features

            with _Stage(self, "encode") as st:
                key = stage_key(
                    stage="encode", v=1, image=img.sha256, size=list(img.size), landmarks=lm_key,
                    crop=cfg.encode_size, models=[models.ids.get(n) for n in ENCODE_MODELS],
                )  # fmt: skip
                features = self.cached("encode", key, read_features)
                if features is not None:
                    st.reused = True
                else:
                    features, _ = encode_face(
                        img.rgb, lm_work.landmarks, models.encode, size=cfg.encode_size, image_sha256=img.sha256
                    )
                    self.store("encode", key, lambda p: write_features(p, features))

        # init-gaussians
        from avatarcli.gaussians.init import init_gaussians
        from avatarcli.gaussians.ply import read_gaussian_ply, write_gaussian_ply

        init_cfg = _init_config(cfg)
        with _Stage(self, "init-gaussians") as st:
            key = stage_key(
                stage="init-gaussians",
                v=1,
                fit=fit_key,
                image=img.sha256,
                size=list(img.size),
                init=_settings_repr(init_cfg),
            )
            ply = self.cached("init-gaussians", key, read_gaussian_ply)
            if ply is not None:
                st.reused = True
            else:
                ply = init_gaussians(models.flame, fit, img.rgb, init_cfg)
                self.store("init-gaussians", key, lambda p: write_gaussian_ply(p, ply))

        # denoise -> the head (written atomically to the output)
        from avatarcli.stages.denoise import denoise_head

        den_cfg = _denoise_config(cfg, models.device)
        with _Stage(self, "denoise"):
            step = {"n": 0}

            def on_step(*a, **k):
                step["n"] += 1
                self.emit("step", stage="denoise", info={"step": step["n"]})

            head, stats = denoise_head(
                ply, models.flame, img.rgb, features=features, denoiser=models.denoiser, config=den_cfg, on_step=on_step
            )
            write_gaussian_ply(job.output, head)
        self.result.stats = {k: v for k, v in (stats or {}).items() if isinstance(v, (int, float, str, bool))}
        self.result.status = "done"
        return self.result


def _one_line(e: BaseException) -> str:
    if isinstance(e, AvatarError):
        return " ".join(str(e).split())
    return f"internal error: {type(e).__name__}: {' '.join(str(e).split())}"


def run_batch(
    jobs: Sequence[Job],
    config: ReconstructConfig | None = None,
    workdir: str | Path | None = None,
    force: bool = False,
    skip_existing: bool = False,
    on_event: Callable[[Event], None] | None = None,
    models: Models | None = None,
    validated: dict[str, AvatarError] | None = None,
) -> BatchResult:
    """Reconstruct every job; a failing photo is recorded and the others go on.

    Order: skip existing outputs (skip_existing) -> validate every remaining photo (no model
    loaded yet) -> check outputs are writable -> resolve + load the models once (environment
    problems raise here, exit 3) -> run the stages per photo. `validated`: the result of an
    earlier validate_inputs (not repeated)."""
    config = config or ReconstructConfig()
    emit = on_event or (lambda ev: None)
    wd = Path(workdir) if workdir is not None else None
    t0 = time.perf_counter()
    results = [JobResult(j.name, j.image, j.output) for j in jobs]
    todo: list[int] = []
    for i, j in enumerate(jobs):
        if skip_existing and j.output.is_file():
            results[i].status = "skipped"
        else:
            todo.append(i)
    check_outputs([jobs[i] for i in todo], wd)
    errors = validated if validated is not None else validate_inputs([jobs[i] for i in todo], config.max_side)
    ready = []
    for i in todo:
        e = errors.get(jobs[i].name)
        if e is not None:
            r = results[i]
            r.status, r.error, r.error_stage, r.exception = "failed", _one_line(e), "validate", e
        else:
            ready.append(i)
    batch = BatchResult(results)
    for i, r in enumerate(results):
        if r.status in ("skipped", "failed"):  # settled before any model: report them now
            emit(Event("job_end", index=i, job=jobs[i], result=r))
    if ready:
        if models is None:
            tm = time.perf_counter()
            models = load_models([jobs[i] for i in ready], config)
            batch.model_load_seconds = time.perf_counter() - tm
            emit(Event("models", seconds=batch.model_load_seconds))
        for i in ready:
            job = jobs[i]
            emit(Event("job_start", index=i, job=job))
            runner = _JobRunner(i, job, config, models, wd, force, emit)
            try:
                results[i] = runner.run()
            except KeyboardInterrupt:
                raise
            except EnvironmentProblem:
                raise  # the machine, not the photo: stop the batch (exit 3)
            except Exception as e:  # noqa: BLE001 - one photo failing never stops the batch
                r = runner.result
                r.status, r.error, r.exception = "failed", _one_line(e), e
                r.error_stage = r.error_stage or "setup"
                if not isinstance(e, AvatarError):
                    r.stats["traceback"] = "".join(traceback.format_exception(type(e), e, e.__traceback__))
                results[i] = r
            emit(Event("job_end", index=i, job=job, result=results[i]))
    batch.seconds = time.perf_counter() - t0
    return batch


def reconstruct(
    images: Iterable[str | Path], out: str | Path, config: ReconstructConfig | None = None, **kw
) -> BatchResult:
    """plan_batch + run_batch in one call (the Python equivalent of `avatar reconstruct`)."""
    landmarks = kw.pop("landmarks", None)
    return run_batch(plan_batch(list(images), out, landmarks), config, **kw)
