"""Rendering a Gaussian PLY to a PNG (one view) or an MP4/GIF turntable.

Usable from Python without the CLI:
    plan = plan_render("head.ply", "turn.mp4", RenderConfig(frames=60))
    render_file(plan)
`plan_render` validates everything (output type, options, the PLY, the camera
file, the backend/device) before anything is rendered; outputs are atomic.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import torch

from avatarcli.device import resolve_device
from avatarcli.errors import InputError
from avatarcli.flame.artifact import read_flame_fit
from avatarcli.flame.forward import root_joint
from avatarcli.flame.loader import load_flame
from avatarcli.flame.model import check_model_hash
from avatarcli.gaussians.model import Gaussians
from avatarcli.gaussians.mouth import MouthGate, gate_interior, head_gate
from avatarcli.gaussians.ply import GaussianPly, read_gaussian_ply
from avatarcli.io.atomic import check_output_path
from avatarcli.progress import warn
from avatarcli.render.api import check_backend, render, to_uint8
from avatarcli.render.camera import Camera
from avatarcli.render.video import write_png, write_video
from avatarcli.render.views import fit_camera, frame_gaussians, resolve_up, turntable_cameras, up_basis, view_camera

IMAGE_SUFFIXES = (".png",)
VIDEO_SUFFIXES = (".mp4", ".gif")
MAX_SIZE = 8192


@dataclass
class RenderConfig:
    yaw: float = 0.0  # degrees; turntables start here
    pitch: float = 0.0
    size: int | None = None  # square side; None: 512 (or the photo's size with `camera`)
    distance: float | None = None  # None: framed from the Gaussians' extent
    fov: float = 20.0  # vertical field of view, degrees
    up: str = "auto"  # auto | y | -y | z | -z | x | -x (see avatarcli.render.views)
    frames: int = 72  # turntable frames
    fps: float = 24.0
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    backend: str = "auto"  # auto | gsplat | torch
    device: str = "auto"
    camera: str | None = None  # None, "photo" (the fit stored in the head) or a flame.npz path
    sh_degree: int | None = None  # None: all the PLY has
    views: tuple[float, ...] = ()  # several yaws: one PNG each (OUT_yaw<Y>.png), all in one call


def view_paths(out: Path, yaws: Iterable[float]) -> list[Path]:
    """OUT.png and yaws (0, 60, -30, 22.5) -> OUT_yaw0.png, OUT_yaw60.png, OUT_yaw-30.png, OUT_yaw22.5.png."""
    return [out.with_name(f"{out.stem}_yaw{y:g}{out.suffix}") for y in yaws]


@dataclass
class RenderPlan:
    ply: GaussianPly
    out: Path
    kind: str  # "png" | "video" | "views" (one PNG per camera, `outputs`)
    cameras: list[Camera]
    config: RenderConfig
    device: torch.device
    backend: str
    outputs: list[Path] = field(default_factory=list)  # "views": the PNG of each camera
    mouth: MouthGate | None = None  # the head's mouth-interior gate (hidden while the lips touch)

    @property
    def gaussians(self) -> Gaussians:
        """The Gaussians as drawn: the PLY's, the mouth interior gated by the head's lip state."""
        return gate_interior(self.ply.gaussians, self.ply.binding, self.mouth) if self.mouth else self.ply.gaussians


def parse_yaws(text: str) -> tuple[float, ...]:
    """'30' or '0,60,90,180' -> yaws in degrees (one line InputError otherwise)."""
    try:
        yaws = tuple(float(v) for v in str(text).split(","))
    except ValueError:
        raise InputError(
            f"yaw {text!r}: expected degrees, or several separated by commas (0,60,90,180)", setting="yaw"
        ) from None
    return yaws


def _check_config(cfg: RenderConfig, kind: str) -> None:
    if cfg.size is not None and not 8 <= cfg.size <= MAX_SIZE:
        raise InputError(f"size {cfg.size}: expected 8..{MAX_SIZE} pixels", setting="size")
    if cfg.distance is not None and not (math.isfinite(cfg.distance) and cfg.distance > 0):
        raise InputError(f"distance {cfg.distance}: expected a positive number", setting="distance")
    if not (math.isfinite(cfg.fov) and 1.0 <= cfg.fov <= 150.0):
        raise InputError(f"fov {cfg.fov}: expected 1..150 degrees", setting="fov")
    if not all(math.isfinite(y) for y in (cfg.yaw, *cfg.views)):
        raise InputError("yaw must be finite", setting="yaw")
    if not (math.isfinite(cfg.pitch) and abs(cfg.pitch) < 90.0):
        raise InputError(f"pitch {cfg.pitch}: expected within (-90, 90) degrees", setting="pitch")
    if cfg.views and kind != "png":
        raise InputError(
            "views: several yaws write one PNG each: use a .png output (OUT_yaw<Y>.png are written)", setting="views"
        )
    if len(set(cfg.views)) != len(cfg.views):
        raise InputError(f"views {','.join(f'{y:g}' for y in cfg.views)}: a yaw is repeated", setting="views")
    if kind == "video":
        if not 1 <= cfg.frames <= 100000:
            raise InputError(f"frames {cfg.frames}: expected 1..100000", setting="frames")
        if not (math.isfinite(cfg.fps) and 0 < cfg.fps <= 1000):
            raise InputError(f"fps {cfg.fps}: expected a positive number (at most 1000)", setting="fps")


def _same_shape(a, b) -> bool:
    """Equal FLAME identities (the shorter one zero-padded)."""
    a, b = np.asarray(a, np.float64).reshape(-1), np.asarray(b, np.float64).reshape(-1)
    n = max(a.size, b.size)
    return bool(np.allclose(np.pad(a, (0, n - a.size)), np.pad(b, (0, n - b.size)), atol=1e-6, rtol=0))


def _camera_fit(cfg: RenderConfig, ply, flame):
    """(fit, root joint [3]) for --camera photo / FIT.npz.

    The root joint (the centre of the fit's global rotation) depends only on the FLAME shape:
    the head's stored one is used when the fit has the head's shape, else it comes from --flame."""
    meta = ply.meta
    if cfg.camera is None:
        raise ValueError("_camera_fit needs a camera setting")
    if cfg.camera == "photo":
        if meta is None:
            raise InputError(
                "camera photo: this PLY holds no fit (not an avatarcli head); pass `camera` FLAME_FIT.npz",
                setting="camera",
                mentions=("camera",),
            )
        return meta.fit, meta.root_joint

    fit = read_flame_fit(cfg.camera)
    if meta is not None and _same_shape(meta.fit.shape, fit.shape):
        return fit, meta.root_joint
    if flame is None:
        why = "its FLAME shape differs from the head's" if meta is not None else "the PLY has no avatarcli metadata"
        raise InputError(
            f"camera: {why}; pass `flame` so that the fit's root joint can be computed",
            path=cfg.camera,
            setting="camera",
            mentions=("flame",),
        )

    model = load_flame(flame)
    shape = torch.as_tensor(np.asarray(fit.shape), dtype=torch.float32).reshape(1, -1)
    return fit, root_joint(model, shape)[0].numpy()


def plan_render(
    ply_or_path: str | Path | GaussianPly, out: str | Path, config: RenderConfig, flame: str | Path | None = None
) -> RenderPlan:
    """Validate the request and build the cameras. Reads the PLY (if a path); renders nothing."""
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        kind = "png"
    elif suffix in VIDEO_SUFFIXES:
        kind = "video"
    else:
        raise InputError(
            f"unknown output type {suffix or '(none)'!r}: use .png (one view), .mp4 or .gif (turntable)", path=out
        )
    check_output_path(out)
    _check_config(config, kind)
    if config.up not in ("auto", "y", "-y", "z", "-z", "x", "-x"):
        up_basis(config.up)  # raises the one-line error
    if config.camera is not None and (kind != "png" or config.views):
        raise InputError(
            "camera renders the photo's single view: use a .png output and no other views", path=out, setting="camera"
        )
    outputs = [check_output_path(p) for p in view_paths(out, config.views)] if config.views else []
    if config.camera not in (None, "photo") and not Path(config.camera).is_file():
        raise InputError(
            "camera: expected 'photo' or a flame.npz fit file (not found)", path=config.camera, setting="camera"
        )
    device = resolve_device(config.device)
    backend = check_backend(config.backend, device)
    ply = read_gaussian_ply(ply_or_path) if isinstance(ply_or_path, (str, Path)) else ply_or_path
    mouth = _mouth_gate(ply, flame)
    g = gate_interior(ply.gaussians, ply.binding, mouth) if mouth else ply.gaussians
    if config.sh_degree is not None and not 0 <= config.sh_degree <= g.sh_degree:
        raise InputError(f"sh_degree {config.sh_degree}: the PLY has degree {g.sh_degree}", setting="sh_degree")

    if config.camera is not None:
        fit, root = _camera_fit(config, ply, flame)
        cameras = [fit_camera(fit, root, config.size)]
    else:
        size = config.size or 512
        framing = frame_gaussians(
            g.means, g.opacities, resolve_up(config.up, ply.meta is not None, getattr(ply, "up", None))
        )
        kw: dict[str, Any] = dict(width=size, height=size, distance=config.distance, fov_deg=config.fov)
        if config.views:
            cameras = [view_camera(framing, y, config.pitch, **kw) for y in config.views]
        else:
            n = config.frames if kind == "video" else 1
            cameras = turntable_cameras(framing, n, config.yaw, config.pitch, **kw)
    kind = "views" if config.views else kind
    return RenderPlan(ply=ply, out=out, kind=kind, cameras=cameras, config=config, device=device, backend=backend,
                      outputs=outputs, mouth=mouth)  # fmt: skip


def _mouth_gate(ply: GaussianPly, flame: str | Path | None) -> MouthGate | None:
    """The head's mouth gate (gaussians/mouth.py: head_gate): from the lip state head.ply stores (version 4);
    a head with a mouth but none stored (version 3) gets it from `flame` when given, else is drawn as stored."""
    meta = ply.meta
    if meta is None or meta.n_anchors == 0 or meta.lip_opening is not None:
        return head_gate(meta)
    model = load_flame(flame) if flame is not None or os.environ.get("AVATAR_FLAME") else None
    if model is None or not check_model_hash(meta.flame_model_sha256, model, force=True):
        warn("this head predates the stored lip state (head.ply version 3): its mouth interior is drawn as "
             "stored (teeth may show through closed lips); pass its `flame` model to hide it", mentions=("flame",))  # fmt: skip
        return None
    return head_gate(meta, model)


def iter_frames(plan: RenderPlan) -> Iterator[np.ndarray]:
    """uint8 [H, W, 3] per camera of the plan, rendered one by one."""
    g = plan.gaussians.to(plan.device)
    bg = torch.tensor(plan.config.background, dtype=torch.float32, device=plan.device)
    for cam in plan.cameras:
        with torch.no_grad():
            out = render(g, cam.to(plan.device), background=bg, backend=plan.backend, sh_degree=plan.config.sh_degree)
        yield to_uint8(out.rgb)


def render_file(plan: RenderPlan, progress=None) -> Path:
    """Render the plan and write its output atomically. `progress(i, n)` after each frame."""
    n = len(plan.cameras)

    def frames():
        for i, img in enumerate(iter_frames(plan)):
            yield img
            if progress is not None:
                progress(i + 1, n)

    if plan.kind == "png":
        return write_png(plan.out, next(iter(frames())))
    if plan.kind == "views":  # one PNG per view, each atomic, all from one loaded and framed PLY
        for path, img in zip(plan.outputs, frames()):
            write_png(path, img)
        return plan.out
    return write_video(plan.out, frames(), fps=plan.config.fps)
