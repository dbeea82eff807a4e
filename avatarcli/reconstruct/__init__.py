"""`avatar reconstruct` as a library: photos in, one FLAME-bound Gaussian head (PLY) per photo out.

    jobs = plan_batch([Path("photos/")], Path("heads/"))        # what to do, where outputs go
    errors = validate_inputs(jobs)                               # every photo opened BEFORE any model loads
    result = run_batch(jobs, ReconstructConfig(rounds=0), workdir=Path("work"))

Per photo the stages run in order, models loaded once for the whole batch:

    landmarks -> fit-flame -> encode -> head-region -> invert-gan -> init-gaussians -> denoise -> NAME.ply

* `landmarks`: the detector, or the user's own landmarks.npz (`Job.landmarks`).
  Landmarks are in ORIGINAL photo pixels; the later stages work on the photo
  downscaled to `max_side` (LoadedImage.scale), so the fit uses the scaled points.
* `encode` (and the diffusion denoiser) are skipped with `no_diffusion`:
  denoise then fits the input view only.
* `prior` ("diffusion" | "gan" | "gan+diffusion"): what the denoise rounds fit the unseen
  sides to. With a GAN prior the `invert-gan` stage inverts the batch's generator (loaded
  once; each photo tunes a copy) to the photo, and its inversion is the rounds' prior
  (avatarcli.gan.prior); "gan" alone skips encode and needs no diffusion weights.
* With a work folder, each intermediate artifact goes to WORKDIR/NAME/
  (landmarks.npz, flame.npz, features.safetensors, head_region.png,
  gan_inversion.safetensors, init.ply) with a sidecar
  recording the content hashes of its inputs (avatarcli.workdir); a re-run
  reuses every artifact whose inputs are unchanged. `force` redoes them all.

One photo failing (an AvatarError or any other exception) is recorded in its
JobResult and the batch goes on. Problems of the whole run (missing FLAME or
weights, no CUDA, an unwritable output folder) raise before any photo is
processed. Outputs are written atomically: a failed or killed job leaves no
partial file under its output name.

Layout: `plan` (settings, jobs, output and input checks), `models` (resolved, then
loaded once), `runner` (the stages of one job, the batch).
"""

from avatarcli.reconstruct.models import Models, load_models, needed_models, resolve_models
from avatarcli.reconstruct.plan import (
    IMAGE_SUFFIXES,
    Job,
    ReconstructConfig,
    check_outputs,
    check_writable_folder,
    expand_images,
    plan_batch,
    validate_inputs,
    validate_job,
)
from avatarcli.reconstruct.runner import (
    ARTIFACTS,
    STAGES,
    BatchResult,
    Event,
    JobResult,
    reconstruct,
    run_batch,
    stages_of,
)

__all__ = [
    "ARTIFACTS", "IMAGE_SUFFIXES", "STAGES", "BatchResult", "Event", "Job", "JobResult", "Models", "ReconstructConfig",
    "check_outputs", "check_writable_folder", "expand_images", "load_models", "needed_models", "plan_batch",
    "reconstruct", "resolve_models", "run_batch", "stages_of", "validate_inputs", "validate_job",
]  # fmt: skip
