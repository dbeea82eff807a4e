"""`avatar init-gaussians`: FLAME-bound Gaussians seeded on the fitted head, coloured from the photo."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from avatarcli.commands.common import FlameOpt, existing_inputs
from avatarcli.io.atomic import check_output_path
from avatarcli.progress import info, warn


def init_gaussians_command(
    flame_fit: Path = typer.Argument(..., help="flame.npz (from `avatar fit-flame`).", show_default=False),
    image: Path = typer.Option(..., "--image", "-i", help="The photo the FLAME fit was made on.", show_default=False),
    output: Path = typer.Option(..., "--output", "-o", help="init.ply to write.", show_default=False),
    flame: Optional[Path] = FlameOpt,
    n_gaussians: int = typer.Option(
        30_000, "--n-gaussians", "-n", min=1, max=2_000_000, help="Gaussians seeded on the surface (area-weighted)."
    ),
    sh_degree: int = typer.Option(
        1, "--sh-degree", min=0, max=3, help="Spherical-harmonics degree stored (bands above 0 start at zero)."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the surface sampling."),
    mask: Optional[Path] = typer.Option(
        None,
        "--mask",
        help="Head region (white = face, hair, ears, neck; any image, e.g. from `avatar head-region`): the mesh is deformed to its outline and nothing is seeded outside it.",
        show_default=False,
    ),
    mouth: bool = typer.Option(
        True,
        "--mouth/--no-mouth",
        help="Add a mouth interior (dark cavity, teeth, tongue; 4 % of the Gaussians, rigid with the skull and the jaw) so open-mouth frames show a mouth.",
    ),
    force: bool = typer.Option(False, "--force", help="Use --flame even if it is not the model the fit was made with."),
) -> int:
    """Seed Gaussians on the fitted FLAME head, each bound to its triangle, coloured from the photo.

    Points the photo sees take its colour; hidden points take the colour of the mirrored point
    (FLAME is left/right symmetric) or a skin tone. The head is stored canonical: the photo's
    expression and jaw, upright, facing +z; the fit's pose and camera go into the PLY header.

    \b
    Examples:
      avatar init-gaussians face.flame.npz --image face.jpg --flame ~/flame -o face.init.ply
      avatar init-gaussians face.flame.npz -i face.jpg -o init.ply -n 50000 --sh-degree 2
      avatar init-gaussians face.flame.npz -i face.jpg -o init.ply --mask face.region.png
      avatar init-gaussians face.flame.npz -i face.jpg -o init.ply --no-mouth
    """
    from avatarcli.flame.artifact import read_flame_fit
    from avatarcli.flame.loader import load_flame
    from avatarcli.flame.model import check_model_hash
    from avatarcli.gaussians.init import InitConfig
    from avatarcli.gaussians.ply import write_gaussian_ply
    from avatarcli.segment.head_region import read_region
    from avatarcli.stages.init_gaussians import init_head, load_photo_for

    existing_inputs([flame_fit, image])
    check_output_path(output)
    fit = read_flame_fit(flame_fit)
    photo = load_photo_for(image, fit.image_size, flame_fit)
    model = load_flame(flame)
    if not check_model_hash(fit.flame_model_sha256, model, flame_fit, force):
        warn(f"{flame_fit}: made with another FLAME model (sha256 differs); continuing (--force)")
    cfg = InitConfig(n_gaussians=n_gaussians, sh_degree=sh_degree, seed=seed, mouth_fraction=0.04 if mouth else 0.0)
    region = read_region(mask, photo.rgb.shape[:2]) if mask is not None else None
    ply, stats = init_head(model, fit, photo.rgb, cfg, region=region)
    write_gaussian_ply(output, ply)
    info(
        f"{output}: {stats.n_gaussians} Gaussians; colours: {100 * stats.from_photo:.0f}% from the photo, "
        f"{100 * stats.mirrored:.0f}% mirrored, {100 * stats.skin_prior:.0f}% skin prior"
        + (f", {100 * stats.unseen_hair:.0f}% unseen hair" if stats.unseen_hair is not None else "")
    )
    return 0


def register(app: typer.Typer) -> None:
    app.command("init-gaussians", no_args_is_help=True)(init_gaussians_command)
