"""Running a reconstruct batch: per photo the stages in order, each through one cached-stage
helper (reuse the work-folder artifact when its inputs are unchanged, else compute and store it),
under the batch policy of avatarcli.batch."""

from __future__ import annotations

import dataclasses
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence, TypeVar

import numpy as np
import torch

from avatarcli.batch import Batch, one_line
from avatarcli.diffusion.encode import encode_face
from avatarcli.diffusion.features import read_features, write_features
from avatarcli.errors import AvatarError
from avatarcli.flame.artifact import read_flame_fit, write_flame_fit
from avatarcli.flame.fit import FitConfig
from avatarcli.gan.invert import Inversion, InversionConfig, read_inversion_artifact, write_inversion
from avatarcli.gan.prior import GanPrior, PriorChain
from avatarcli.gaussians.init import InitConfig
from avatarcli.gaussians.ply import read_gaussian_ply, write_gaussian_ply
from avatarcli.io.images import load_image
from avatarcli.landmarks.artifact import read_landmarks, write_landmarks
from avatarcli.landmarks.points import given_landmarks
from avatarcli.reconstruct.models import ENCODE_MODELS, Models, load_models
from avatarcli.reconstruct.plan import Job, ReconstructConfig, check_outputs, plan_batch, validate_inputs
from avatarcli.segment.head_region import choose_head_region, read_region, write_region
from avatarcli.stages.denoise import DenoiseConfig, DenoiseStats, denoise_head
from avatarcli.stages.fit_flame import fit_photos, quality_of
from avatarcli.stages.init_gaussians import init_head
from avatarcli.stages.invert_gan import invert_photo
from avatarcli.stages.landmarks import photo_landmarks
from avatarcli.workdir import WorkDir, stage_key

STAGES = ("landmarks", "fit-flame", "encode", "head-region", "invert-gan", "init-gaussians", "denoise")
# intermediate artifact of each stage in WORKDIR/NAME/
ARTIFACTS = {
    "landmarks": "landmarks.npz",
    "fit-flame": "flame.npz",
    "encode": "features.safetensors",
    "head-region": "head_region.png",
    "invert-gan": "gan_inversion.safetensors",
    "init-gaussians": "init.ply",
}
T = TypeVar("T")


def stages_of(config: ReconstructConfig) -> list[str]:
    """The stages a run with these settings goes through, in order (encode with the diffusion
    models, invert-gan with a GAN prior)."""
    skip = {"encode"} if not config.use_diffusion else set()
    return [s for s in STAGES if s not in skip and (s != "invert-gan" or config.use_gan)]


@dataclass
class JobResult:
    name: str
    image: Path
    output: Path
    status: str = "pending"  # "done" | "failed" | "skipped"
    stage_times: dict[str, float] = field(default_factory=dict)  # seconds per stage run (reused: 0)
    reused: list[str] = field(default_factory=list)  # stages whose work-folder artifact was reused
    fit_error_px: float | None = None  # mean landmark reprojection error of the FLAME fit
    poor_fit: bool = False  # fit error above avatarcli.flame.artifact.fit_quality's threshold
    error: str | None = None  # the one-line message
    error_stage: str | None = None  # "validate" or a stage name
    exception: BaseException | None = field(default=None, repr=False)
    head_region: str | None = None  # where the head region came from: face-parsing | user | grabcut
    denoise: DenoiseStats | None = None  # the denoise stage's figures (None when it did not run here)
    gan_loss: float | None = None  # the GAN inversion's last loss (None: no GAN prior)
    warnings: list[str] = field(default_factory=list)  # per-photo warnings (also sent as "warning" events)
    traceback: str | None = field(default=None, repr=False)  # of an unexpected (non-AvatarError) failure

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
            "gan_loss": None if self.gan_loss is None else round(float(self.gan_loss), 6),
            "warnings": list(self.warnings),
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

    kind: str  # "models" | "job_start" | "stage_start" | "stage_end" | "step" | "warning" | "job_end"
    index: int = -1  # job index in the batch (-1: not about one job)
    job: Job | None = None
    stage: str | None = None
    seconds: float = 0.0
    reused: bool = False
    result: JobResult | None = None
    info: dict[str, Any] = field(default_factory=dict)  # step: {"step": n}; warning: {"message": line}


# ----------------------------------------------------------------------------- stage settings


def _build(cls, **kw):
    """cls(**kw) keeping only the fields cls has and the values that are not None."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in kw.items() if k in names and v is not None})


def _init_config(config: ReconstructConfig):
    return _build(InitConfig, n_gaussians=config.n_gaussians, seed=config.seed,
                  mouth_fraction=None if config.mouth else 0.0)  # fmt: skip


def _denoise_config(config: ReconstructConfig, device=None):
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

    def __init__(self, runner: _JobRunner, name: str):
        self.runner, self.name, self.reused = runner, name, False

    def __enter__(self) -> _Stage:
        self.t0 = time.perf_counter()
        self.runner.result.error_stage = self.name
        self.runner.emit("stage_start", stage=self.name)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        dt = time.perf_counter() - self.t0
        if exc_type is None:
            r = self.runner.result
            r.stage_times[self.name] = 0.0 if self.reused else dt
            if self.reused:
                r.reused.append(self.name)
            r.error_stage = None
            self.runner.emit("stage_end", stage=self.name, seconds=dt, reused=self.reused)


class _JobRunner:
    def __init__(
        self, index: int, job: Job, config: ReconstructConfig, models: Models, workdir: Path | None, force: bool, emit
    ):
        self.index, self.job, self.config, self.models, self.force = index, job, config, models, force
        self.result = JobResult(job.name, job.image, job.output)
        self._emit = emit
        self.wd = WorkDir(Path(workdir) / job.name) if workdir is not None else None

    def emit(self, kind: str, **kw) -> None:
        self._emit(Event(kind, index=self.index, job=self.job, **kw))

    # the work folder -----------------------------------------------------
    def cached(self, stage: str, key: str, read: Callable[[Path], T]) -> T | None:
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

    def store(self, stage: str, key: str, write: Callable[[Path], Any]) -> None:
        if self.wd is None:
            return
        name = ARTIFACTS[stage]
        self.wd.invalidate(name)
        write(self.wd.path(name))
        self.wd.mark_done(name, key)

    def stage(
        self,
        name: str,
        key: str,
        read: Callable[[Path], T],
        compute: Callable[[], T],
        write: Callable[[Path, T], Any],
        reuse: bool = True,
    ) -> T:
        """One cached stage: the work folder's artifact when fresh (and `reuse`), else compute() and
        store it there; timed and reported."""
        with _Stage(self, name) as st:
            cached = self.cached(name, key, read) if reuse else None
            st.reused = cached is not None
            value = cached if cached is not None else compute()
            if cached is None:
                self.store(name, key, lambda p: write(p, value))
        return value

    def artifact_key(self, stage: str, key: str, label: str) -> str:
        """The key downstream stages use for this stage's output: the stored artifact's content
        when there is a work folder, else the stage's own key."""
        return stage_key(**{label: self.wd.path(ARTIFACTS[stage])}) if self.wd is not None else key

    # the pipeline --------------------------------------------------------
    def run(self) -> JobResult:
        cfg = self.config
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed & 0xFFFFFFFF)
        img = load_image(self.job.image, max_side=cfg.max_side)
        lm_work, lm_key = self.landmarks(img)
        fit, fit_key = self.fit_flame(img, lm_work, lm_key)
        features = self.encode(img, lm_work, lm_key) if cfg.use_diffusion else None
        region, region_key = self.head_region(img, lm_work, lm_key, features)
        keys = f"{lm_key}:{fit_key}:{region_key}"
        inversion = self.invert_gan(img, lm_work, fit, region, keys) if cfg.use_gan else None
        ply = self.init_gaussians(img, fit, f"{fit_key}:{region_key}", region)
        self.denoise(img, ply, features, region, inversion)
        self.result.status = "done"
        return self.result

    def landmarks(self, img):
        """-> the landmarks in working-image pixels (the photo downscaled to max_side), their key."""
        cfg, models, job = self.config, self.models, self.job
        if job.landmarks is not None:
            given = job.landmarks
            key = stage_key(stage="landmarks", v=1, given=given)

            # validate_inputs refused (or, with --force, warned about) landmarks of another photo
            lm = self.stage(
                "landmarks",
                key,
                read_landmarks,
                lambda: given_landmarks(given, img, force=True),
                write_landmarks,
                reuse=False,
            )
        else:
            key = stage_key(
                stage="landmarks", v=1, image=img.sha256, face_index=cfg.face_index,
                detector=[models.ids.get(n) for n in models.detector_models],
            )  # fmt: skip

            def detect():
                return photo_landmarks(img, models.detector, face_index=cfg.face_index)

            lm = self.stage("landmarks", key, read_landmarks, detect, write_landmarks)
        lm_work = dataclasses.replace(
            lm,
            image_size=img.size,
            landmarks=img.to_working(lm.landmarks),
            bbox=img.to_working(lm.bbox.reshape(2, 2)).reshape(4),
        )
        return lm_work, self.artifact_key("landmarks", key, "lm")

    def fit_flame(self, img, lm_work, lm_key: str):
        """FLAME fit in working-image pixels -> the fit and its key (records the fit quality)."""
        cfg, models = self.config, self.models
        fit_cfg = FitConfig(n_shape=cfg.n_shape, n_expr=cfg.n_expr)
        key = stage_key(
            stage="fit-flame", v=1, landmarks=lm_key, flame=models.flame.sha256, size=list(img.size),
            scale=img.scale, fit=_settings_repr(fit_cfg),
        )  # fmt: skip
        compute = lambda: fit_photos(models.flame, [lm_work], fit_cfg, models.device)[0][0]  # noqa: E731
        fit = self.stage("fit-flame", key, read_flame_fit, compute, write_flame_fit)
        quality = quality_of(fit, lm_work, fit_cfg)
        self.result.fit_error_px, self.result.poor_fit = quality.mean_error_px, quality.poor
        return fit, self.artifact_key("fit-flame", key, "fit")

    def encode(self, img, lm_work, lm_key: str):
        """Face-crop features for the diffusion rounds."""
        cfg, models = self.config, self.models
        encode_models = models.encode
        if encode_models is None:  # load_models loads them whenever the run uses diffusion
            raise ValueError("encode: the run's models have no encoder (was it loaded without diffusion?)")
        key = stage_key(
            stage="encode", v=1, image=img.sha256, size=list(img.size), landmarks=lm_key,
            crop=cfg.encode_size, models=[models.ids.get(n) for n in ENCODE_MODELS],
        )  # fmt: skip
        compute = lambda: encode_face(  # noqa: E731
            img.rgb, lm_work.landmarks, encode_models, size=cfg.encode_size, image_sha256=img.sha256
        )[0]
        return self.stage("encode", key, read_features, compute, write_features)

    def head_region(self, img, lm_work, lm_key: str, features):
        """The head region at the working size (avatarcli.segment.head_region: face-parsing, else the
        job's --mask, else the weight-free segmentation), kept in the work folder as head_region.png."""
        job = self.job
        src = "face-parsing" if features is not None else ("user" if job.mask is not None else "grabcut")
        key = stage_key(
            stage="head-region", v=2, image=img.sha256, size=list(img.size), landmarks=lm_key, source=src,
            mask=job.mask, features=None if features is None else self.artifact_key("encode", "", "f"),
        )  # fmt: skip
        compute = lambda: choose_head_region(img.rgb, lm_work.landmarks, features=features, user_mask=job.mask).mask  # noqa: E731
        region = self.stage("head-region", key, lambda p: read_region(p, img.size), compute, write_region)
        self.result.head_region = src
        return region, self.artifact_key("head-region", key, "region")

    def warn(self, message: str) -> None:
        self.result.warnings.append(message)
        self.emit("warning", info={"message": message})

    def invert_gan(self, img, lm_work, fit, region, input_key: str) -> Inversion:
        """The GAN inverted to the photo (avatarcli.stages.invert_gan) on a copy of the batch's
        generator; kept in the work folder as gan_inversion.safetensors."""
        cfg, models = self.config, self.models
        G = models.gan
        if G is None:  # load_models loads it whenever the run uses a GAN prior
            raise ValueError("invert-gan: the run's models have no GAN generator")
        inv_cfg = InversionConfig(w_steps=cfg.gan_w_steps, pti_steps=cfg.gan_pti_steps, seed=cfg.seed)
        key = stage_key(
            stage="invert-gan", v=1, image=img.sha256, size=list(img.size), inputs=input_key,
            gan=models.ids.get("gan"), loss=models.ids.get("perceptual"), inversion=_settings_repr(inv_cfg),
        )  # fmt: skip
        step = {"n": 0}

        def on_step(phase: str, i: int, loss: float) -> None:
            step["n"] += 1
            self.emit("step", stage="invert-gan", info={"step": step["n"], "phase": phase, "loss": loss})

        def compute() -> Inversion:
            return invert_photo(G, img.rgb, lm_work.landmarks, region, fit, models.flame, inv_cfg,
                                models.perceptual, on_step, on_warning=self.warn)  # fmt: skip

        inv = self.stage("invert-gan", key, read_inversion_artifact, compute, write_inversion)
        losses = inv.pti_losses or inv.w_losses
        self.result.gan_loss = losses[-1] if losses else None
        return inv

    def init_gaussians(self, img, fit, fit_key: str, region=None):
        init_cfg = _init_config(self.config)
        key = stage_key(
            stage="init-gaussians", v=1, fit=fit_key, image=img.sha256, size=list(img.size),
            init=_settings_repr(init_cfg),
        )  # fmt: skip
        compute = lambda: init_head(self.models.flame, fit, img.rgb, init_cfg, region=region)[0]  # noqa: E731
        return self.stage("init-gaussians", key, read_gaussian_ply, compute, write_gaussian_ply)

    def denoise(self, img, ply, features, region=None, inversion: Inversion | None = None) -> None:
        """The head, written atomically to the job's output (never cached); with an inversion the
        rounds' prior is the GAN (before the diffusion denoiser with gan+diffusion)."""
        models = self.models
        den_cfg = _denoise_config(self.config, models.device)
        denoiser = models.denoiser
        if inversion is not None:
            gan = GanPrior(inversion, models.device)
            denoiser = gan if denoiser is None else PriorChain(gan, denoiser)
        with _Stage(self, "denoise"):
            step = {"n": 0}

            def on_step(*a, **k):
                step["n"] += 1
                self.emit("step", stage="denoise", info={"step": step["n"]})

            head, stats = denoise_head(
                ply, models.flame, img.rgb, features=features, denoiser=denoiser, config=den_cfg,
                on_step=on_step, mask=region,
            )  # fmt: skip
            write_gaussian_ply(self.job.output, head)
        self.result.denoise = stats


# ----------------------------------------------------------------------------- the batch


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
    """Reconstruct every job; a failing photo is recorded and the others go on (avatarcli.batch).

    Order: skip existing outputs (skip_existing) -> validate every remaining photo (no model
    loaded yet) -> check outputs are writable -> resolve + load the models once (environment
    problems raise here, exit 3) -> run the stages per photo. `validated`: the result of an
    earlier validate_inputs (not repeated)."""
    config = config or ReconstructConfig()
    config.check()
    emit = on_event or (lambda ev: None)
    wd = Path(workdir) if workdir is not None else None
    t0 = time.perf_counter()
    results = [JobResult(j.name, j.image, j.output) for j in jobs]
    todo = [i for i, j in enumerate(jobs) if not (skip_existing and j.output.is_file())]
    for i in set(range(len(jobs))) - set(todo):
        results[i].status = "skipped"
    check_outputs([jobs[i] for i in todo], wd)
    errors = validated if validated is not None else validate_inputs([jobs[i] for i in todo], config.max_side, force)
    for i in todo:
        if jobs[i].name in errors:
            e = errors[jobs[i].name]
            r = results[i]
            r.status, r.error, r.error_stage, r.exception = "failed", one_line(e), "validate", e
    ready = [i for i in todo if results[i].status == "pending"]
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
        _run_jobs(jobs, ready, results, config, models, wd, force, emit)
    batch.seconds = time.perf_counter() - t0
    return batch


def _run_jobs(
    jobs: Sequence[Job], ready: list[int], results: list[JobResult], config: ReconstructConfig, models: Models,
    wd: Path | None, force: bool, emit: Callable[[Event], None],
) -> None:  # fmt: skip
    """Step 3 of the batch policy: each ready job in turn, going on past failures."""
    policy: Batch[Job] = Batch(jobs)
    for i in ready:
        emit(Event("job_start", index=i, job=jobs[i]))
        runner = _JobRunner(i, jobs[i], config, models, wd, force, emit)
        done = policy.attempt(i, runner.run)
        if done is None:
            e = policy.failed[i]
            r = runner.result
            r.status, r.error, r.exception = "failed", one_line(e), e
            r.error_stage = r.error_stage or "setup"
            if not isinstance(e, AvatarError):
                r.traceback = "".join(traceback.format_exception(type(e), e, e.__traceback__))
        results[i] = done or runner.result
        emit(Event("job_end", index=i, job=jobs[i], result=results[i]))


def reconstruct(
    images: Iterable[str | Path], out: str | Path, config: ReconstructConfig | None = None, **kw
) -> BatchResult:
    """plan_batch + run_batch in one call (the Python equivalent of `avatar reconstruct`)."""
    landmarks = kw.pop("landmarks", None)
    return run_batch(plan_batch(list(images), out, landmarks), config, **kw)
