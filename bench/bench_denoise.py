"""Speed of the diffusion `denoise` stage and of each of its parts, as ratios within the same run.

Models are RANDOMLY INITIALISED (no download) from config dicts:
  full  : the real architectures and sizes of lambdalabs/sd-image-variations-diffusers
          (SD 1.x UNet2DConditionModel, 860M params; SD AutoencoderKL; CLIP ViT-L/14 vision
          tower with projection), fp16 on CUDA (fp32 on the CPU), 512 px views, the default
          DenoiseConfig schedule (input-view fit 300 steps, 4 rounds 0.7 -> 0.2 of 100 fit steps,
          7 yaws x 2 pitches = 14 novel views, 25 DDIM steps, guidance 3, max 8 views per UNet call).
  small : the tiny test models (avatarcli.testing.tiny_diffusion), 64 px views, a short
          schedule: the figure a 2-core CPU machine can produce in a minute.
A synthetic textured head (Gaussians on a head-sized ellipsoid, avatarcli.testing.synthetic_scene)
stands in for the init head: random UNet weights give meaningless views, but the work and
the time are those of the real run.

Parts reported: input-view fit, novel-view renders, denoise (UNet calls, VAE encode + decode,
the rest = scheduler and resizing), Gaussian fit steps of the rounds (incl. the final input-view
fit), and micro-benchmarks of one UNet call with 8 views + guidance, one VAE pass and one CLIP
embedding. Ratios: share of the total run, and per-call costs against one UNet call.
Peak GPU memory on CUDA.

    python bench/bench_denoise.py                    # small on the CPU; plus full when CUDA is present
    python bench/bench_denoise.py --mode full        # full only (meant for a GPU)
    python bench/bench_denoise.py --mode small --threads 1
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

# ----------------------------------------------------------------------------- real configs


def sd1_unet_config() -> dict:
    """UNet of SD 1.x (what sd-image-variations fine-tunes): 4 levels, 320..1280 channels, 768-d cross attention."""
    return dict(
        sample_size=64,
        in_channels=4,
        out_channels=4,
        layers_per_block=2,
        block_out_channels=(320, 640, 1280, 1280),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=768,
        attention_head_dim=8,
        norm_num_groups=32,
    )


def sd_vae_config() -> dict:
    return dict(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(128, 256, 512, 512),
        layers_per_block=2,
        latent_channels=4,
        norm_num_groups=32,
        sample_size=512,
        scaling_factor=0.18215,
    )


def clip_vit_l14_vision_config() -> dict:
    return dict(
        hidden_size=1024,
        intermediate_size=4096,
        num_hidden_layers=24,
        num_attention_heads=16,
        image_size=224,
        patch_size=14,
        projection_dim=768,
        hidden_act="quick_gelu",
    )


# ----------------------------------------------------------------------------- setup


@dataclass
class Mode:
    name: str
    device: torch.device
    dtype: torch.dtype
    view_size: int
    rounds: int
    yaws: tuple
    pitches: tuple
    num_inference_steps: int
    input_steps: int
    round_steps: int
    max_batch: int
    mesh: tuple  # ellipsoid (n_lat, n_lon)
    backend: str
    info: dict = field(default_factory=dict)


def full_mode(device: torch.device) -> Mode:
    half = device.type == "cuda"
    return Mode(
        "full", device, torch.float16 if half else torch.float32, 512, 4,
        (45.0, -45.0, 90.0, -90.0, 135.0, -135.0, 180.0), (0.0, 20.0), 25, 300, 100, 8, (50, 100),
        "auto",
    )  # fmt: skip


def small_mode() -> Mode:
    return Mode(
        "small",
        torch.device("cpu"),
        torch.float32,
        64,
        2,
        (90.0, -90.0, 180.0),
        (0.0,),
        10,
        40,
        20,
        8,
        (8, 16),
        "torch",
    )


def build_models(mode: Mode):
    """(unet, vae, clip encoder, scheduler config) with random weights: real sizes or the tiny test ones."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.utils import logging as dlogging
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from avatarcli.diffusion.models import CLIP_MEAN, CLIP_STD, ClipEncoder, ImagePrep
    from avatarcli.testing import tiny_diffusion as T

    torch.manual_seed(0)
    if mode.name == "full":
        ucfg, vcfg, ccfg = sd1_unet_config(), sd_vae_config(), clip_vit_l14_vision_config()
    else:
        ucfg, vcfg, ccfg = T.tiny_unet_config(), T.tiny_vae_config(), T.tiny_clip_vision_config()
    with torch.device(mode.device):  # build directly on the device: no 3.4 GB CPU copy for the full UNet
        unet = UNet2DConditionModel(**ucfg)
        vae = AutoencoderKL(**vcfg)
        clip = CLIPVisionModelWithProjection(CLIPVisionConfig(**ccfg))
    dlogging.set_verbosity_error()  # no "cast with to()" notices: these models are random anyway
    unet, vae, clip = (m.to(mode.device, mode.dtype).eval().requires_grad_(False) for m in (unet, vae, clip))
    mode.info["unet_params_M"] = round(sum(p.numel() for p in unet.parameters()) / 1e6, 1)
    mode.info["vae_params_M"] = round(sum(p.numel() for p in vae.parameters()) / 1e6, 1)
    mode.info["clip_params_M"] = round(sum(p.numel() for p in clip.parameters()) / 1e6, 1)
    size = clip.config.image_size
    return unet, vae, ClipEncoder(clip, ImagePrep((size, size), CLIP_MEAN, CLIP_STD)), T.tiny_scheduler_config()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device, repeats=3, warmup=1) -> float:
    """Minimum wall time of `fn` over `repeats` after `warmup` calls (seconds)."""
    for _ in range(warmup):
        fn()
    sync(device)
    best = math.inf
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - t)
    return best


# ----------------------------------------------------------------------------- the run


def run(mode: Mode, repeats: int) -> list[tuple[str, float, int | None, str]]:
    from avatarcli.diffusion.denoiser import Conditioning, SDImageVariationsDenoiser
    from avatarcli.diffusion.rounds import RoundsConfig, refine
    from avatarcli.gaussians.fit import FitConfig, ViewTarget, fit_input_view
    from avatarcli.testing.synthetic_scene import ellipsoid_mesh, make_scene, perturbed

    dev = mode.device
    unet, vae, clip, sched_cfg = build_models(mode)
    den = SDImageVariationsDenoiser(unet, vae, sched_cfg, num_inference_steps=mode.num_inference_steps, guidance_scale=3.0,
                                    resolution=None, max_batch=mode.max_batch)  # fmt: skip

    # micro-benchmarks: one UNet call with 8 views + guidance, one VAE encode + decode of 8 views, one CLIP embed
    f = 2 ** (len(vae.config.block_out_channels) - 1)
    lat_side = mode.view_size // f
    x_lat = torch.randn(16, 4, lat_side, lat_side, device=dev, dtype=mode.dtype)
    hidden = torch.randn(16, 1, unet.config.cross_attention_dim, device=dev, dtype=mode.dtype)
    t = torch.tensor(500, device=dev)
    with torch.no_grad():
        unet_call = timed(lambda: unet(x_lat, t, encoder_hidden_states=hidden).sample, dev, repeats)
        imgs8 = torch.rand(8, 3, mode.view_size, mode.view_size, device=dev, dtype=mode.dtype)
        vae_pass = timed(lambda: vae.decode(vae.encode(imgs8).latent_dist.mean).sample, dev, repeats)
        photo = torch.rand(1, mode.view_size, mode.view_size, 3, device=dev)
        clip_s = timed(lambda: clip.embed(photo), dev, repeats)
        cond = Conditioning(image_embeds=clip.embed(photo))

    # the stage on a synthetic head: input-view fit, then the rounds (with the final input-view fit)
    v, fcs = ellipsoid_mesh(*mode.mesh)
    sc = make_scene(v, fcs, size=mode.view_size, backend="torch" if dev.type == "cpu" else "auto")
    init = perturbed(sc.truth.subset(torch.arange(0, sc.truth.n, 4)), seed=1)  # one Gaussian per triangle
    mode.info["n_gaussians"] = init.n
    mode.info["n_triangles"] = int(fcs.shape[0])
    verts, faces = sc.vertices.to(dev), sc.faces.to(dev)
    target = ViewTarget(sc.camera.to(dev), sc.image.to(dev), sc.mask.to(dev))
    fit_cfg = FitConfig(steps=mode.input_steps, sh_degree=1, backend=mode.backend, max_gaussians=30_000)
    rcfg = RoundsConfig(rounds=mode.rounds, yaws=mode.yaws, pitches=mode.pitches, view_size=mode.view_size, seed=0)
    round_fit = FitConfig(steps=mode.round_steps, sh_degree=1, backend=mode.backend, densify_every=0)
    den.timings.__init__()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    sync(dev)
    t0 = time.perf_counter()
    bound, fst = fit_input_view(init.to(dev), verts, faces, target.camera, target.image, target.mask, fit_cfg)
    sync(dev)
    t1 = time.perf_counter()
    bound, rst = refine(bound, verts, faces, target, den, cond, rcfg, round_fit)
    sync(dev)
    t2 = time.perf_counter()
    total = t2 - t0
    if dev.type == "cuda":
        mode.info["peak_gpu_memory_GiB"] = round(torch.cuda.max_memory_allocated(dev) / 2**30, 2)
    n_views = rst.n_views
    tm = den.timings
    n_round_steps = mode.rounds * mode.round_steps + rst.final_input_steps
    mode.info.update(n_views=n_views, psnr_input_fit=round(fst.psnr, 2), psnr_after_rounds=round(rst.psnr, 2),
                     unet_batch=min(n_views, mode.max_batch) * 2)  # fmt: skip

    rows = [
        ("default denoise stage, total", total, None, "baseline"),
        ("  input-view fit", t1 - t0, mode.input_steps, "fit steps"),
        ("  rounds: render novel views", rst.render_s, mode.rounds, "rounds"),
        ("  rounds: denoise (all)", rst.denoise_s, tm.calls, "denoise calls"),
        ("    UNet", tm.unet_s, tm.unet_calls, "UNet calls"),
        ("    VAE encode + decode", tm.vae_s, None, ""),
        ("    scheduler, resize, rest", max(0.0, rst.denoise_s - tm.unet_s - tm.vae_s), None, ""),
        ("  rounds: Gaussian fit steps", rst.fit_s, n_round_steps, "fit steps"),
        ("  other", max(0.0, total - (t1 - t0) - rst.render_s - rst.denoise_s - rst.fit_s), None, ""),
        ("micro: UNet call, 8 views + CFG (batch 16)", unet_call, 1, "call"),
        ("micro: VAE encode + decode, 8 views", vae_pass, 1, "call"),
        ("micro: CLIP image embedding, 1 photo", clip_s, 1, "call"),
    ]
    return rows


def print_table(mode: Mode, rows) -> None:
    total = rows[0][1]
    unet_call = next(r[1] for r in rows if r[0].startswith("micro: UNet"))
    dev = mode.device
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU, {torch.get_num_threads()} thread(s)"
    print(f"\n== {mode.name}: {name}, {str(mode.dtype).replace('torch.', '')}, {mode.view_size} px views, "
          f"{mode.info['n_views']} novel views x {mode.rounds} rounds, {mode.num_inference_steps} DDIM steps at strength 1 ==")  # fmt: skip
    print(f"{'part':46s} {'seconds':>9s} {'share':>7s} {'count':>7s} {'per item':>10s} {'vs 1 UNet call':>15s}")
    for label, sec, count, unit in rows:
        share = f"{100 * sec / total:6.1f}%" if not label.startswith("micro") else "       "
        per = sec / count if count else None
        per_s = f"{per * 1e3:8.1f}ms" if per is not None else " " * 10
        vs = f"{per / unet_call:14.2f}x" if per is not None else ""
        cnt = f"{count:7d}" if count is not None else " " * 7
        print(f"{label:46s} {sec:9.3f} {share} {cnt} {per_s} {vs}  {unit}")
    print("info: " + json.dumps(mode.info))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=["auto", "small", "full", "both"], default="auto",
                    help="auto: small on the CPU, plus full when CUDA is present")  # fmt: skip
    ap.add_argument("--device", default="auto", help="device of the full mode (auto: cuda when present)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--repeats", type=int, default=3, help="repeats of each micro-benchmark (minimum reported)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from avatarcli.device import resolve_device

    dev = resolve_device(args.device)
    modes = []
    if args.mode in ("auto", "both", "small"):
        modes.append(small_mode())
    if args.mode in ("full", "both") or (args.mode == "auto" and dev.type == "cuda"):
        if dev.type != "cuda":
            print("warning: the full mode on the CPU takes a very long time (hours)", file=sys.stderr)
        modes.append(full_mode(dev))
    for m in modes:
        rows = run(m, args.repeats)
        print_table(m, rows)
    if args.mode == "auto" and dev.type != "cuda":
        print("\n(no CUDA: full-size mode skipped; run `python bench/bench_denoise.py --mode full` on a GPU)")


if __name__ == "__main__":
    main()
