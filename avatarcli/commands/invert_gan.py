"""`avatar invert-gan`: the 3D GAN prior inverted to one photo (W-space, then pivotal tuning)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from avatarcli.commands.common import DeviceOpt, FlameOpt, existing_inputs
from avatarcli.errors import InputError
from avatarcli.io.atomic import check_output_path
from avatarcli.landmarks.artifact import read_landmarks
from avatarcli.landmarks.points import check_photo_file
from avatarcli.progress import info, progress, warn


def invert_gan_command(
    image: Path = typer.Argument(..., help="The photo (the one the FLAME fit was made on).", show_default=False),
    fit: Path = typer.Option(..., "--fit", help="flame.npz (from `avatar fit-flame`).", show_default=False),
    landmarks: Path = typer.Option(
        ..., "--landmarks", "-l", help="landmarks.npz of the photo (from `avatar landmarks`).", show_default=False
    ),
    output: Path = typer.Option(..., "--output", "-o", help="inversion .safetensors to write.", show_default=False),
    flame: Optional[Path] = FlameOpt,
    weights: Optional[Path] = typer.Option(
        None,
        "--weights",
        help="Converted GAN weights (.safetensors). Default: the registry's panohead "
        "(`avatar weights convert panohead --from FILE.pkl`).",
        show_default=False,
    ),
    mask: Optional[Path] = typer.Option(
        None, "--mask", help="Head region (white = head). Default: segmented from the photo.", show_default=False
    ),
    w_steps: int = typer.Option(500, "--w-steps", min=0, help="W-space optimisation steps."),
    pti_steps: int = typer.Option(350, "--pti-steps", min=0, help="Generator fine-tuning (PTI) steps."),
    no_lpips: bool = typer.Option(False, "--no-lpips", help="L2 only (no perceptual loss, no LPIPS weights needed)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the starting latent."),
    device: str = DeviceOpt,
    force: bool = typer.Option(False, "--force", help="Go on when the landmarks or fit name another photo / model."),
) -> int:
    """Invert the 3D-aware GAN (PanoHead-style) to the photo: the GAN's aligned crop, the FLAME
    fit's camera in the GAN's convention, latent optimisation then generator fine-tuning on L2 +
    LPIPS inside the head region. `denoise --prior gan --gan FILE` uses the result for the sides
    the photo cannot show. LPIPS needs `pip install 'avatarcli[gan]'` and `avatar weights fetch
    vgg16`; without them the loss is L2 only (one warning line).

    \b
    Examples:
      avatar invert-gan face.jpg --fit face.flame.npz -l face.landmarks.npz -o face.gan.safetensors --flame ~/flame
      avatar invert-gan face.jpg --fit f.npz -l f.landmarks.npz -o f.gan.safetensors --w-steps 200 --pti-steps 100
      avatar invert-gan face.jpg --fit f.npz -l lm.npz -o g.safetensors --weights tiny.safetensors --no-lpips
    """
    from avatarcli.device import resolve_device
    from avatarcli.flame.artifact import read_flame_fit
    from avatarcli.gan.convert import load_generator
    from avatarcli.gan.invert import InversionConfig, write_inversion
    from avatarcli.stages.init_gaussians import load_photo_for
    from avatarcli.stages.invert_gan import invert_photo

    existing_inputs([image, fit, landmarks] + [p for p in (weights, mask) if p is not None])
    check_output_path(output)
    ff = read_flame_fit(fit)
    photo = load_photo_for(image, ff.image_size, fit)
    lm = read_landmarks(landmarks)
    check_photo_file(landmarks, lm, image.name, photo.sha256, force)
    if tuple(lm.image_size) != tuple(ff.image_size):
        raise InputError(
            f"landmarks are for a {tuple(lm.image_size)} image, the fit for {ff.image_size}", path=landmarks
        )
    from avatarcli.segment.head_region import choose_head_region

    region = choose_head_region(photo.rgb, lm.landmarks, user_mask=mask).mask  # [H, W] 0..1
    dev = resolve_device(device)
    if weights is None:
        from avatarcli.weights import resolve_file

        weights = resolve_file("panohead")  # MissingModelError (exit 3) names the convert command
    G = load_generator(weights, dev)
    from avatarcli.flame.loader import load_flame
    from avatarcli.flame.model import check_model_hash

    model = load_flame(flame)
    if not check_model_hash(ff.flame_model_sha256, model, fit, force):
        warn(f"{fit}: made with another FLAME model (sha256 differs); continuing (--force)")
    perceptual = None
    if not no_lpips:
        from avatarcli.gan.lpips import lpips_or_l2

        perceptual = lpips_or_l2(dev)
    cfg = InversionConfig(w_steps=w_steps, pti_steps=pti_steps, seed=seed)
    with progress() as bar:
        task = bar.add_task("invert-gan", total=max(1, w_steps + pti_steps), status="")

        def on_step(stage: str, i: int, loss: float) -> None:
            bar.update(task, completed=i + 1 + (w_steps if stage == "pti" else 0), status=f"{stage} loss {loss:.4f}")

        inv = invert_photo(G, photo.rgb, lm.landmarks, region, ff, model, cfg, perceptual, on_step, on_warning=warn)
    write_inversion(output, inv)
    last = inv.pti_losses[-1] if inv.pti_losses else (inv.w_losses[-1] if inv.w_losses else float("nan"))
    info(f"{image} -> {output}: loss {last:.4f} ({'L2 + LPIPS' if perceptual is not None else 'L2'})")
    return 0


def register(app: typer.Typer) -> None:
    app.command("invert-gan", no_args_is_help=True)(invert_gan_command)
