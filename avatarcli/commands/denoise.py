"""`avatar denoise`: fit the Gaussian head to its photo, then refine the unseen sides by diffusion."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from avatarcli.commands.common import BackendOpt, DeviceOpt, FlameOpt, existing_inputs, flag_names
from avatarcli.diffusion.features import read_features
from avatarcli.diffusion.models import SD_IMAGE_VARIATIONS, resolve_model
from avatarcli.errors import InputError
from avatarcli.io.atomic import check_output_path
from avatarcli.progress import FitStep, info, progress, warn

if TYPE_CHECKING:  # the stage's modules load with the command (scipy and the fit): `avatar --help` stays quick
    from avatarcli.diffusion.denoiser import Denoiser
    from avatarcli.diffusion.features import Features
    from avatarcli.gaussians.ply import GaussianPly
    from avatarcli.stages.denoise import DenoiseConfig, DenoiseStats

CPU_DIFFUSION_NOTE = (
    "diffusion rounds on the CPU take a long time (many minutes per photo; seconds on a GPU); "
    "--no-diffusion fits the input view only"
)


def denoise_command(
    init_ply: Path = typer.Argument(..., help="init.ply (from `avatar init-gaussians`).", show_default=False),
    image: Path = typer.Option(..., "--image", "-i", help="The photo the head was fitted on.", show_default=False),
    output: Path = typer.Option(..., "--output", "-o", help="head.ply to write.", show_default=False),
    flame: Optional[Path] = FlameOpt,
    features: Optional[Path] = typer.Option(
        None,
        "--features",
        help="features.safetensors (from `avatar encode`): face-region mask and conditioning. Needed for --rounds > 0.",
        show_default=False,
    ),
    rounds: int = typer.Option(
        4, "--rounds", min=0, max=50, help="Diffusion rounds refining the unseen sides (0: input-view fit only)."
    ),
    no_diffusion: bool = typer.Option(False, "--no-diffusion", help="Same as --rounds 0 (no diffusion model needed)."),
    steps: int = typer.Option(200, "--steps", min=0, help="Input-view fit steps (fewer: faster, less exact)."),
    round_steps: int = typer.Option(100, "--round-steps", min=0, help="Fit steps per diffusion round."),
    sh_degree: Optional[int] = typer.Option(
        None,
        "--sh-degree",
        min=0,
        max=3,
        help="Spherical-harmonics degree of the colours (default: 0 with --no-diffusion, 1 with diffusion rounds; "
        "a degree above 0 given with --no-diffusion is fitted from the photo alone).",
        show_default=False,
    ),
    size: int = typer.Option(
        512, "--size", min=16, max=4096, help="Working resolution: the photo's long side is fitted at most this big."
    ),
    max_gaussians: int = typer.Option(
        30_000, "--max-gaussians", min=1, help="Cap on the Gaussian count (densification)."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of densification and the diffusion noise."),
    device: str = DeviceOpt,
    backend: str = BackendOpt,
    mask: Optional[Path] = typer.Option(
        None,
        "--mask",
        help="Head region (white = face, hair, ears, neck; any image, e.g. from `avatar head-region`): where the photo counts; overrides the features' face-parsing mask.",
        show_default=False,
    ),
    prior: str = typer.Option(
        "diffusion",
        "--prior",
        help="What the rounds fit the unseen sides to: diffusion (the image-variations model), gan (the inverted "
        "3D GAN, --gan FILE; no --features needed) or gan+diffusion (the GAN's views refined by diffusion).",
    ),
    gan: Optional[Path] = typer.Option(
        None,
        "--gan",
        help="GAN inversion .safetensors (from `avatar invert-gan`) for --prior gan / gan+diffusion.",
        show_default=False,
    ),
    force: bool = typer.Option(False, "--force", help="Use --flame / --features even if their hashes do not match."),
) -> int:
    """Fit the Gaussians to the photo (L1 + D-SSIM in the head region), then refine the unseen sides.

    Each diffusion round renders novel views, denoises them with the pinned image-conditioned
    diffusion model (`avatar weights fetch sd-image-variations`) and fits them softly; the photo
    stays the hard constraint. --rounds 0 (or --no-diffusion) fits the input view only and needs
    no diffusion model.

    \b
    Examples:
      avatar denoise face.init.ply --image face.jpg --features face.features.safetensors -o face.ply --flame ~/flame
      avatar denoise init.ply -i face.jpg -o head.ply --no-diffusion --steps 500 --sh-degree 2
      avatar denoise init.ply -i face.jpg --features f.safetensors -o head.ply --rounds 6 --device cuda
      avatar denoise init.ply -i face.jpg -o head.ply --no-diffusion --mask face.region.png
      avatar denoise init.ply -i face.jpg -o head.ply --prior gan --gan face.gan.safetensors --flame ~/flame
    """
    from avatarcli.device import resolve_device
    from avatarcli.gaussians.ply import read_gaussian_ply, write_gaussian_ply
    from avatarcli.render.api import check_backend
    from avatarcli.stages.denoise import DenoiseConfig
    from avatarcli.stages.init_gaussians import load_photo_for

    n_rounds = 0 if no_diffusion else rounds
    use_diffusion, use_gan = _check_prior(prior, n_rounds, gan)
    existing_inputs([init_ply, image] + [p for p in (features, gan) if p is not None])
    check_output_path(output)
    dev = resolve_device(device)
    check_backend(backend, dev)
    ply = read_gaussian_ply(init_ply)
    if ply.binding is None or ply.meta is None:
        raise InputError(
            "not an avatarcli head (no FLAME binding / metadata): make one with `avatar init-gaussians`", path=init_ply
        )
    photo = load_photo_for(image, ply.meta.image_size, init_ply)
    region = None
    if mask is not None:
        from avatarcli.segment.head_region import read_region

        region = read_region(mask, photo.rgb.shape[:2])
    if use_diffusion and features is None:
        raise InputError(
            "--rounds > 0 needs --features FEATURES.safetensors (from `avatar encode`); or use --no-diffusion"
        )
    feats = _features_of(features, photo.sha256, force) if features is not None else None
    cfg = DenoiseConfig(
        steps=steps, round_steps=round_steps, sh_degree=sh_degree, rounds=n_rounds, seed=seed, max_side=size,
        max_gaussians=max_gaussians, backend=backend, device=str(dev),
    )  # fmt: skip
    with flag_names(max_side="--size"):
        cfg.validate()
    denoiser: Denoiser | None = None
    gan_prior = _gan_prior(gan, ply.meta.image_size, dev) if use_gan else None
    if use_diffusion:  # resolve the pinned model BEFORE any work: a missing one exits 3 at once
        resolve_model(SD_IMAGE_VARIATIONS)
        if dev.type == "cpu":
            warn(CPU_DIFFUSION_NOTE)
    from avatarcli.flame.loader import load_flame
    from avatarcli.flame.model import check_model_hash

    model = load_flame(flame)
    if not check_model_hash(ply.meta.flame_model_sha256, model, init_ply, force):
        warn(f"{init_ply}: made with another FLAME model (sha256 differs); continuing (--force)")
    if use_diffusion:
        from avatarcli.diffusion.denoiser import load_default_denoiser

        denoiser = load_default_denoiser(dev)
    if gan_prior is not None:
        from avatarcli.gan.prior import PriorChain

        denoiser = gan_prior if denoiser is None else PriorChain(gan_prior, denoiser)

    with flag_names(max_side="--size"):
        head, stats = _denoise_with_progress(ply, model, photo.rgb, feats, denoiser, cfg, region)
    write_gaussian_ply(output, head)
    info(
        f"{output}: {stats.n_gaussians} Gaussians; input view PSNR {stats.psnr_init:.1f} -> {stats.psnr:.1f} dB, "
        f"SSIM {stats.ssim:.3f} at {stats.size[1]}x{stats.size[0]} ({n_rounds} {prior} round(s), {stats.seconds:.0f} s); "
        f"head region ({stats.mask}): PSNR {stats.psnr_region:.1f} dB on white, "
        f"coverage {stats.coverage:.3f}, spill {stats.spill:.3f}"
    )
    return 0


def _check_prior(prior: str, n_rounds: int, gan: Path | None) -> tuple[bool, bool]:
    """(diffusion used, GAN used) by --prior; InputError for an unknown one or a GAN prior without --gan."""
    from avatarcli.gan.prior import PRIORS

    if prior not in PRIORS:
        raise InputError(f"--prior {prior!r}: expected one of {', '.join(PRIORS)}")
    use_diffusion, use_gan = n_rounds > 0 and "diffusion" in prior, n_rounds > 0 and "gan" in prior
    if use_gan and gan is None:
        raise InputError(f"--prior {prior} needs --gan INVERSION.safetensors (from `avatar invert-gan`)")
    return use_diffusion, use_gan


def _gan_prior(gan: Path | None, image_size: tuple[int, int], dev):
    from avatarcli.gan.prior import load_gan_prior

    assert gan is not None  # _check_prior
    return load_gan_prior(gan, image_size, dev)


def _features_of(path: Path, photo_sha256: str, force: bool) -> Features:
    """The photo's features file, refused when made from another image unless --force."""
    feats = read_features(path)
    if feats.image_sha256 != photo_sha256:
        msg = "was computed from another image (image sha256 differs from --image)"
        if not force:
            raise InputError(msg + "; use the matching features or --force", path=path)
        warn(f"{path}: {msg}; continuing (--force)")
    return feats


def _denoise_with_progress(
    ply, model, rgb, feats, denoiser, cfg: DenoiseConfig, region
) -> tuple[GaussianPly, DenoiseStats]:
    """denoise_head under a progress bar (steps of the fit and of every round; loss, PSNR, count)."""
    from avatarcli.stages.denoise import denoise_head

    total = cfg.steps + cfg.rounds * cfg.round_steps
    with progress() as bar:
        task = bar.add_task("denoise", total=max(1, total), status="")

        def on_step(i: int, d: FitStep) -> None:
            ptxt = f"{d.psnr:.1f} dB" if math.isfinite(d.psnr) else "-"
            bar.update(task, completed=min(i, total), status=f"{d.phase} loss {d.loss:.4f} PSNR {ptxt} n {d.n}")

        out = denoise_head(ply, model, rgb, features=feats, denoiser=denoiser, config=cfg, on_step=on_step, mask=region)
        bar.update(task, completed=max(1, total))
    return out


def register(app: typer.Typer) -> None:
    app.command("denoise", no_args_is_help=True)(denoise_command)
