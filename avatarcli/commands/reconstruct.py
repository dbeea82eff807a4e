"""`avatar reconstruct`: photos -> animatable Gaussian heads, every stage in one process."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import torch
import typer
from rich.markup import escape

from avatarcli.commands.common import DeviceOpt, FlameOpt, error_line, existing_inputs
from avatarcli.commands.denoise import CPU_DIFFUSION_NOTE
from avatarcli.errors import InputError
from avatarcli.progress import console, info, progress, warn


def reconstruct_command(
    images: List[Path] = typer.Argument(
        ..., help="Photos (jpg/jpeg/png/webp) and/or folders of photos.", show_default=False
    ),
    output: Path = typer.Option(
        ...,
        "--output",
        "-o",
        help="head.ply for one photo; a folder (DIR/) of NAME.ply for several photos or a folder.",
        show_default=False,
    ),
    rounds: Optional[int] = typer.Option(
        None,
        "--rounds",
        min=0,
        help="Refinement rounds on novel views, fitted to the --prior's images (default: the denoise stage's; "
        "0 = input-view fit only).",
        show_default=False,
    ),
    no_diffusion: bool = typer.Option(
        False,
        "--no-diffusion",
        help="Skip encode and the refinement rounds: fit the input view only (no diffusion or GAN weights needed).",
    ),
    prior: str = typer.Option(
        "diffusion",
        "--prior",
        help="What the rounds fit the unseen sides to: diffusion (the image-variations model), gan (the 3D GAN "
        "inverted to each photo by the invert-gan stage; no diffusion weights) or gan+diffusion (the GAN's views "
        "refined by diffusion). The GAN needs `avatar weights convert panohead --from FILE.pkl` or --gan-weights.",
    ),
    gan_weights: Optional[Path] = typer.Option(
        None,
        "--gan-weights",
        help="Converted GAN generator (.safetensors) for --prior gan / gan+diffusion (default: the registry's panohead).",
        show_default=False,
    ),
    gan_w_steps: int = typer.Option(500, "--gan-w-steps", min=0, help="GAN inversion: W-space optimisation steps."),
    gan_pti_steps: int = typer.Option(
        350, "--gan-pti-steps", min=0, help="GAN inversion: generator fine-tuning steps."
    ),
    device: str = DeviceOpt,
    seed: int = typer.Option(
        0, "--seed", help="Random seed (Gaussian seeding, diffusion noise): same seed, same head."
    ),
    flame: Optional[Path] = FlameOpt,
    landmarks: Optional[Path] = typer.Option(
        None,
        "--landmarks",
        "-l",
        help="Your own 68 landmarks (skips detection, no detector weights needed): a file for one photo "
        "(.npz/.npy/.txt/.csv/.pts, as `avatar landmarks --landmarks` takes) or a folder of NAME.<ext>.",
        show_default=False,
    ),
    workdir: Optional[Path] = typer.Option(
        None,
        "--workdir",
        help="Keep intermediate artifacts in DIR/NAME/ and reuse them on a re-run when their inputs are unchanged.",
        show_default=False,
    ),
    force: bool = typer.Option(
        False,
        "--force",
        help="Redo every stage even when the work folder holds an up-to-date artifact; use a landmarks.npz "
        "made from another photo (warned).",
    ),
    skip_existing: bool = typer.Option(
        False, "--skip-existing", help="Skip photos whose output .ply already exists (batch re-runs, sharding)."
    ),
    json_out: bool = typer.Option(
        False,
        "--json",
        help="Print a machine-readable summary on stdout (per photo: status, output, stage times, fit error, error).",
    ),
    face_index: Optional[int] = typer.Option(
        None,
        "--face-index",
        min=0,
        help="Several faces in a photo: which one (0 = largest; default: the largest).",
        show_default=False,
    ),
    mask: Optional[Path] = typer.Option(
        None,
        "--mask",
        help="Your own head matte (white = face, hair, ears, neck; any image): a file for one photo, a folder of "
        "NAME.png for several. Default: the face-parsing mask with diffusion, else a segmentation that needs "
        "no weights. The region used is kept as head_region.png in --workdir.",
        show_default=False,
    ),
    detector: str = typer.Option(
        "auto",
        "--detector",
        help="Landmark detector: auto (FAN when its weights are present, else dlib), fan, or dlib "
        "(`pip install 'avatarcli[dlib]'`: no hub weights; non-commercial licence).",
    ),
    max_side: int = typer.Option(
        2048, "--max-side", min=32, help="Photos with a longer side are downscaled to this for the stages."
    ),
    steps: Optional[int] = typer.Option(
        None, "--steps", min=1, help="Gaussian fitting steps (default: the denoise stage's).", show_default=False
    ),
    n_gaussians: Optional[int] = typer.Option(
        None,
        "--n-gaussians",
        "-n",
        min=1,
        help="Gaussians seeded on the FLAME surface (default: init-gaussians').",
        show_default=False,
    ),
    mouth: bool = typer.Option(
        True, "--mouth/--no-mouth", help="Add a mouth interior (dark cavity, teeth, tongue) for open-mouth animation."
    ),
) -> int:
    """Reconstruct a 3D Gaussian head from each photo: landmarks -> fit-flame -> encode ->
    head-region -> init-gaussians -> denoise, with every model loaded once for the whole batch.
    --prior gan / gan+diffusion adds the invert-gan stage (the GAN inverted to the photo, kept in
    --workdir like the other stages) and fits the rounds to its renders; with --prior gan, encode
    and the diffusion models are not used.

    Every photo is opened and checked before any model is loaded. A photo that fails
    is reported and the others finish. Exit codes: 0 all done; 1 some photos failed
    (batch); 2 bad arguments or a single bad input; 3 environment (FLAME model or
    weights missing, --device cuda without CUDA, output folder not writable).

    \b
    Examples:
      avatar reconstruct photo.jpg -o head.ply --flame ~/flame
      avatar reconstruct photos/ -o heads/ --workdir work/ --json > summary.json
      avatar reconstruct a.jpg b.png -o heads/ --no-diffusion --device cpu
      avatar reconstruct photos/ -o heads/ --skip-existing --landmarks my_landmarks/
      avatar reconstruct photo.jpg -o head.ply --detector dlib --no-diffusion   # offline, no hub weights
      avatar reconstruct photos/ -o heads/ --prior gan --workdir work/ --flame ~/flame   # after weights convert panohead
    """
    from avatarcli.batch import exit_code
    from avatarcli.landmarks.choose import DETECTORS
    from avatarcli.reconstruct import ReconstructConfig, expand_images, plan_batch, run_batch, stages_of
    from avatarcli.reconstruct.plan import attach_masks

    if detector not in DETECTORS:
        raise InputError(f"--detector {detector!r}: expected one of {', '.join(DETECTORS)}")
    notes: list[str] = []
    jobs = attach_masks(plan_batch(images, output, landmarks, notes), mask)
    _, batch = expand_images(images)
    for n in notes:
        info(n)
    config = ReconstructConfig(
        rounds=rounds, no_diffusion=no_diffusion, device=device, seed=seed, flame=flame, max_side=max_side,
        face_index=face_index, steps=steps, n_gaussians=n_gaussians, detector=detector, mouth=mouth, prior=prior,
        gan_weights=gan_weights, gan_w_steps=gan_w_steps, gan_pti_steps=gan_pti_steps,
    )  # fmt: skip
    config.check()
    if gan_weights is not None and config.use_gan:
        existing_inputs([gan_weights])
    stages = stages_of(config)
    cpu_diffusion = config.needs_denoiser and device.strip().lower() in ("cpu", "auto")

    with progress() as bar:
        t_all = bar.add_task("photos", total=len(jobs), status="")
        t_stage = bar.add_task("", total=len(stages), status="", visible=False)

        def on_event(ev) -> None:
            if ev.kind == "models":
                bar.update(t_all, status=f"models loaded in {ev.seconds:.1f} s")
                if cpu_diffusion and not torch.cuda.is_available():  # inputs are valid: work starts now
                    warn(CPU_DIFFUSION_NOTE)
            elif ev.kind == "job_start":
                bar.reset(t_stage, total=len(stages))
                bar.update(t_stage, description=f"  {ev.job.name}", status="", visible=True)
            elif ev.kind == "stage_start":
                bar.update(t_stage, status=ev.stage)
            elif ev.kind == "step":
                bar.update(t_stage, status=f"{ev.stage} step {ev.info.get('step', '')}")
            elif ev.kind == "warning":
                warn(f"{ev.job.name if ev.job else ''}: {ev.info.get('message', '')}")
            elif ev.kind == "stage_end":
                bar.advance(t_stage)
                bar.update(t_stage, status=f"{ev.stage} {'reused' if ev.reused else f'{ev.seconds:.1f} s'}")
            elif ev.kind == "job_end":
                bar.advance(t_all)
                if ev.result is not None:
                    _report(ev.result)

        result = run_batch(jobs, config, workdir=workdir, force=force, skip_existing=skip_existing, on_event=on_event)
        bar.update(t_all, completed=len(jobs))
        bar.update(t_stage, visible=False)

    for r in result.failed:  # the CLI's wording of each failure: the settings it names shown as flags
        if r.exception is not None:
            r.error = error_line(r.exception)
    if json_out:
        typer.echo(json.dumps(result.summary(), indent=2))
    failures = [r.exception for r in result.failed if r.exception is not None]
    if not batch:
        return exit_code(failures, single=True)  # one photo: its own error and exit code (cli.main prints it)
    for r in result.failed:
        console.print(f"[red]failed:[/red] {escape(r.error or '')}", markup=True, soft_wrap=True, highlight=False)
    done, failed, skipped = result.count("done"), result.count("failed"), result.count("skipped")
    info(f"{done} done, {failed} failed, {skipped} skipped in {result.seconds:.1f} s")
    if failed:
        warn(f"{failed} of {len(jobs)} photo(s) failed (see above); the others are done")
    return exit_code(failures, single=False)


def _report(r) -> None:
    """One line per photo as soon as it is settled, on a terminal or not (scripts, CI logs);
    --quiet keeps only the warnings. Failures are listed at the end (and by cli.main for one photo)."""
    if r.status == "done":
        fit = f"fit {r.fit_error_px:.2f} px, " if r.fit_error_px is not None else ""
        info(f"{r.image} -> {r.output} ({fit}{sum(r.stage_times.values()):.1f} s)")
        if r.poor_fit:
            warn(f"{r.image}: poor FLAME fit (mean landmark error {r.fit_error_px:.1f} px); check the photo or bring "
                 "your own --landmarks")  # fmt: skip
    elif r.status == "skipped":
        info(f"{r.image}: skipped, {r.output} exists")


def register(app: typer.Typer) -> None:
    app.command("reconstruct", no_args_is_help=True)(reconstruct_command)
