"""The animate stage: expression files + a bound head -> video, PNG frames or a PLY sequence.

Usable from Python without the CLI:
    clips = load_expressions(["jaw_open.npz"])
    result = animate("head.ply", clips, AnimateConfig(), out="jaw.mp4", flame="~/flame")
Everything is validated (expression files, output paths, the PLY's binding,
the FLAME hash) before frames are rendered; outputs are written atomically.
"""

from __future__ import annotations

import contextlib
import math
import queue
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import torch
from PIL import Image

from avatarcli.animate.expressions import ExpressionClip
from avatarcli.animate.pose import DEFAULT_BATCH, HeadPoser
from avatarcli.animate.sequence import DEFAULT_DURATION, FrameSequence, build_sequence
from avatarcli.batch import wants_folder
from avatarcli.device import resolve_device
from avatarcli.errors import InputError
from avatarcli.flame.artifact import read_flame_fit
from avatarcli.flame.loader import load_flame
from avatarcli.flame.model import FlameModel
from avatarcli.gaussians.ply import GaussianPly, HeadMeta, read_gaussian_ply, write_gaussian_ply
from avatarcli.io.atomic import atomic_dir, atomic_path, check_output_path
from avatarcli.render.api import check_backend, render
from avatarcli.render.camera import Camera, orbit_camera, photo_camera, scaled_camera
from avatarcli.render.video import write_video
from avatarcli.render.views import NAMED_BACKGROUNDS, parse_background  # noqa: F401 - re-exported

VIDEO_SUFFIXES = (".mp4", ".gif")


@dataclass
class AnimateConfig:
    camera: str = "front"  # front | orbit | photo | path to a flame.npz fit
    yaw: float = 0.0  # degrees (front: fixed; orbit: start angle)
    pitch: float = 0.0
    size: int | None = None  # output height = width; None: 512 (or the photo's size for fit cameras)
    fps: float | None = None  # None: the first clip's fps, else 30
    duration: float = DEFAULT_DURATION  # seconds per single-frame target
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    backend: str = "auto"  # auto | gsplat | torch
    device: str = "auto"
    batch: int = DEFAULT_BATCH  # frames per batched LBS
    force: bool = False  # animate even if the FLAME model hash differs from the head's


@dataclass
class OutputPlan:
    video: Path | None = None  # .mp4 / .gif
    frames_dir: Path | None = None  # one PNG per frame
    ply_dir: Path | None = None  # one posed 3DGS PLY per frame


@dataclass
class AnimateResult:
    n_frames: int
    fps: float
    outputs: list[Path] = field(default_factory=list)
    ignored_keys: dict[str, tuple[str, ...]] = field(default_factory=dict)


def plan_outputs(out: str | Path | None, ply_seq: str | Path | None) -> OutputPlan:
    """out FILE.mp4|FILE.gif -> video; out DIR (the one output-folder rule, batch.wants_folder) -> PNG
    frames; ply_seq DIR -> PLYs."""
    if out is None and ply_seq is None:
        raise InputError(
            "nothing to write: give `out` OUT (.mp4, .gif or a folder for PNG frames) and/or `ply_seq` DIR",
            mentions=("out", "ply_seq"),
        )
    plan = OutputPlan()
    if out is not None:
        folder = wants_folder(out)
        out = Path(out)
        suffix = out.suffix.lower()
        if folder:
            if out.exists() and not out.is_dir():
                raise InputError("output exists and is not a folder", path=out)
            _check_replaceable(out, ".png", "out")
            plan.frames_dir = out
        elif suffix in VIDEO_SUFFIXES:
            plan.video = check_output_path(out)
        else:
            raise InputError(
                f"unknown output type {suffix!r}: use .mp4, .gif, or a folder (no suffix) for PNG frames", path=out
            )
    if ply_seq is not None:
        p = Path(ply_seq)
        if p.exists() and not p.is_dir():
            raise InputError("ply_seq: exists and is not a folder", path=p, setting="ply_seq")
        if p.suffix.lower() == ".ply":
            raise InputError("ply_seq takes a folder (one PLY per frame is written into it)", path=p, setting="ply_seq")
        _check_replaceable(p, ".ply", "ply_seq")
        plan.ply_dir = p
    if plan.frames_dir is not None and plan.ply_dir is not None and plan.frames_dir.resolve() == plan.ply_dir.resolve():
        raise InputError("`out` and `ply_seq` name the same folder", path=plan.ply_dir, mentions=("out", "ply_seq"))
    return plan


def _check_replaceable(folder: Path, suffix: str, setting: str) -> None:
    """A frame folder is replaced whole when the new frames are written: refuse one that holds
    anything but frames of an earlier run (frame_*.png / frame_*.ply), so that `-o .` or
    `-o ~/Pictures` can never delete a user's files."""
    if not folder.is_dir():
        return

    pattern = re.compile(r"frame_\d+" + re.escape(suffix))
    other = [q.name for q in folder.iterdir() if not pattern.fullmatch(q.name)]
    if other:
        raise InputError(
            f"{setting}: the folder exists and holds other files ({', '.join(sorted(other)[:3])}"
            f"{', ...' if len(other) > 3 else ''}); it would be replaced: give a new or empty folder",
            path=folder,
            setting=setting,
        )


def frame_name(i: int, n: int, suffix: str) -> str:
    """frame_00000.png ...: zero-padded so that name order is frame order."""
    return f"frame_{i:0{max(5, len(str(n - 1)))}d}{suffix}"


def head_target(canonical: torch.Tensor) -> tuple[tuple[float, float, float], float]:
    """Centre and radius (largest half-extent) of the canonical head's bounding box."""
    lo, hi = canonical.min(0).values, canonical.max(0).values  # [3]
    c = ((lo + hi) / 2).tolist()
    return (c[0], c[1], c[2]), float((hi - lo).max() / 2)


def make_cameras(
    config: AnimateConfig, poser: HeadPoser, n_frames: int, meta: HeadMeta | None = None
) -> Callable[[int], Camera]:
    """Camera for frame i. front/orbit look at the canonical head; a fit file (or
    'photo': the fit stored in the head) gives the photo's viewpoint and size."""
    cam = config.camera
    if cam in ("front", "orbit"):
        size = config.size or 512
        target, radius = head_target(poser.canonical.cpu())
        fov = 20.0
        distance = 1.15 * radius / math.tan(math.radians(fov / 2))
        if cam == "front":
            c = orbit_camera(
                config.yaw, config.pitch, distance=distance, target=target, fov_deg=fov, width=size, height=size
            )
            return lambda i: c
        step = 360.0 / max(n_frames, 1)
        return lambda i: orbit_camera(
            config.yaw + i * step, config.pitch, distance=distance, target=target, fov_deg=fov, width=size, height=size
        )

    fit = (meta.fit if meta is not None else None) if cam == "photo" else read_flame_fit(cam)
    if fit is None:
        raise InputError("camera photo: the head has no fit stored in it", setting="camera")
    c = scaled_camera(photo_camera(fit, poser.root.cpu()), config.size)
    return lambda i: c


def to_uint8(rgb: torch.Tensor) -> np.ndarray:
    """[H, W, 3] float in [0, 1] -> uint8 numpy."""
    return (rgb.detach().clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy()


class BackgroundWriter:
    """Runs `consume(iterable)` in a thread, fed through a bounded queue, so that
    encoding/writing overlaps with rendering. Errors on either side propagate."""

    _END = object()

    def __init__(self, consume: Callable[[Iterable], None], maxsize: int = 8):
        self._q: queue.Queue = queue.Queue(maxsize=maxsize)
        self._error: BaseException | None = None
        self._abort = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(consume,), daemon=True)
        self._thread.start()

    def _items(self) -> Iterator:
        while True:
            item = self._q.get()
            if item is self._END or self._abort.is_set():
                return
            yield item

    def _run(self, consume) -> None:
        try:
            consume(self._items())
        except BaseException as e:  # noqa: BLE001 - handed to the main thread
            self._error = e
            self._abort.set()
            while True:  # unblock a producer waiting on a full queue
                try:
                    self._q.get_nowait()
                except queue.Empty:
                    break

    def put(self, item) -> None:
        while not self._abort.is_set():
            try:
                self._q.put(item, timeout=0.1)
                return
            except queue.Full:
                continue
        self._raise()

    def close(self, ok: bool = True) -> None:
        if not ok:
            self._abort.set()
        while self._thread.is_alive():
            try:
                self._q.put(self._END, timeout=0.1)
                break
            except queue.Full:
                if self._abort.is_set():
                    break
        self._thread.join()
        if ok:  # after a failure upstream, that failure is the one to report
            self._raise()

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error


def _video_consumer(path: Path, fps: float) -> Callable[[Iterable], None]:
    def consume(frames: Iterable) -> None:
        write_video(path, frames, fps)

    return consume


def _png_consumer(folder: Path, n: int) -> Callable[[Iterable], None]:
    def consume(frames: Iterable) -> None:
        for i, img in enumerate(frames):
            Image.fromarray(img).save(folder / frame_name(i, n, ".png"))

    return consume


def _ply_consumer(folder: Path, n: int) -> Callable[[Iterable], None]:
    def consume(items: Iterable) -> None:
        for i, g in enumerate(items):
            # posed world Gaussians, plain 3DGS layout: no binding, no meta (not re-animatable)
            write_gaussian_ply(
                folder / frame_name(i, n, ".ply"), GaussianPly(gaussians=g.to("cpu"), binding=None, meta=None)
            )

    return consume


def render_frames(
    poser: HeadPoser,
    seq: FrameSequence,
    camera_for: Callable[[int], Camera],
    background: tuple[float, float, float] = (1.0, 1.0, 1.0),
    backend: str = "auto",
    batch: int = DEFAULT_BATCH,
    on_gaussians: Callable[[int, object], None] | None = None,
) -> Iterator[np.ndarray]:
    """Rendered frames (uint8 [H, W, 3]) of `seq`, in order; `on_gaussians(i, g)` sees each posed cloud."""
    bg = torch.tensor(background, dtype=torch.float32, device=poser.device)  # [3]
    cams: dict[int, Camera] = {}
    for i, g in enumerate(poser.posed(seq, batch=batch)):
        if on_gaussians is not None:
            on_gaussians(i, g)
        cam = camera_for(i)
        key = id(cam)
        if key not in cams:
            cams.clear()
            cams[key] = cam.to(poser.device)
        with torch.no_grad():
            out = render(g, cams[key], background=bg, backend=backend)
        yield to_uint8(out.rgb)


def _put_posed(writer: BackgroundWriter) -> Callable[[int, object], None]:
    """render_frames' on_gaussians: hand each posed cloud to `writer`."""
    return lambda i, g: writer.put(g)


def _ply_only(poser: HeadPoser, seq: FrameSequence, batch: int, writer: BackgroundWriter) -> Iterator[None]:
    """The PLY-sequence-only loop: each posed cloud goes to `writer`; nothing is rendered (None per frame)."""
    for g in poser.posed(seq, batch=batch):
        writer.put(g)
        yield None


def load_head(path: str | Path) -> GaussianPly:
    """Read a head PLY and check it can be animated (binding + meta) before FLAME is loaded."""
    ply = read_gaussian_ply(path)
    if ply.binding is None:
        raise InputError("this PLY is not an avatarcli head: it has no binding", path=path)
    if ply.meta is None:
        raise InputError("this PLY is not an avatarcli head: it has no FLAME parameters (meta)", path=path)
    return ply


def animate(
    head: str | Path | GaussianPly,
    clips: list[ExpressionClip],
    config: AnimateConfig,
    out: str | Path | None = None,
    ply_seq: str | Path | None = None,
    flame: str | Path | None = None,
    model: FlameModel | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> AnimateResult:
    """Animate `head` (a PLY path, or a loaded GaussianPly) with `clips`; writes the planned
    outputs atomically. `model`: an already loaded FlameModel (else `flame` / $AVATAR_FLAME)."""
    plan = plan_outputs(out, ply_seq)
    if config.camera not in ("front", "orbit", "photo"):
        cam_path = Path(config.camera)
        if not cam_path.is_file():
            raise InputError(
                "camera: expected front, orbit, photo or a flame.npz fit file", path=cam_path, setting="camera"
            )

        read_flame_fit(cam_path)  # a bad fit file fails here, before FLAME is loaded
    if config.size is not None and not (8 <= config.size <= 8192):
        raise InputError(f"size {config.size}: expected 8..8192 pixels", setting="size")
    device = resolve_device(config.device)
    if plan.video is not None or plan.frames_dir is not None:
        check_backend(config.backend, device)
    if isinstance(head, (str, Path)):
        ply, head_path = load_head(head), Path(head)
    else:
        ply, head_path = head, None
    if model is None:
        model = load_flame(flame)
    seq = build_sequence(clips, model.exprdirs.shape[-1], fps=config.fps, duration=config.duration)
    poser = HeadPoser.from_ply(model, ply, path=head_path, device=device, force=config.force)
    camera_for = make_cameras(config, poser, seq.n_frames, meta=ply.meta)
    n = seq.n_frames
    result = AnimateResult(n_frames=n, fps=seq.fps, ignored_keys={str(c.path): c.ignored for c in clips if c.ignored})

    with contextlib.ExitStack() as stack:
        writers: list[BackgroundWriter] = []
        frame_writers: list[BackgroundWriter] = []
        ply_writer = None
        if plan.video is not None:
            tmp = stack.enter_context(atomic_path(plan.video))
            w = BackgroundWriter(_video_consumer(tmp, seq.fps))
            writers.append(w)
            frame_writers.append(w)
        if plan.frames_dir is not None:
            tmp_dir = stack.enter_context(atomic_dir(plan.frames_dir))
            w = BackgroundWriter(_png_consumer(tmp_dir, n))
            writers.append(w)
            frame_writers.append(w)
        if plan.ply_dir is not None:
            tmp_ply = stack.enter_context(atomic_dir(plan.ply_dir))
            ply_writer = BackgroundWriter(_ply_consumer(tmp_ply, n))
            writers.append(ply_writer)
        ok = False
        try:
            frames: Iterator[np.ndarray | None]
            if frame_writers:
                on_g = None if ply_writer is None else _put_posed(ply_writer)
                frames = render_frames(poser, seq, camera_for, config.background, config.backend, config.batch, on_g)
            else:  # PLY sequence only: no rendering
                assert ply_writer is not None  # plan_outputs refuses a plan with nothing to write
                frames = _ply_only(poser, seq, config.batch, ply_writer)
            for i, img in enumerate(frames):
                for w in frame_writers:
                    w.put(img)
                if progress is not None:
                    progress(i + 1, n)
            ok = True
        finally:
            for w in writers:
                w.close(ok)
    result.outputs = [p for p in (plan.video, plan.frames_dir, plan.ply_dir) if p is not None]
    return result
