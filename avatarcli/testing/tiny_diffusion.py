"""Tiny, randomly initialised models of the REAL classes, saved in the hub layout.

Tests (and `bench/bench_denoise.py --small`) load these through exactly the
same resolver and loader code as the real weights:

    sd-image-variations/            (like lambdalabs/sd-image-variations-diffusers)
        model_index.json
        unet/               UNet2DConditionModel
        vae/                AutoencoderKL
        image_encoder/      CLIPVisionModelWithProjection
        feature_extractor/  CLIPImageProcessor (preprocessor_config.json)
        scheduler/          scheduler_config.json (the real repo ships a PNDM config;
                            we load it into DDIMScheduler, as here)
    face-parsing/                   (like jonathandinu/face-parsing)
        config.json + model.safetensors   SegformerForSemanticSegmentation, 19 CelebAMask-HQ labels
        preprocessor_config.json          SegformerImageProcessor

Weights are random (seeded), so outputs are deterministic but meaningless.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

# CelebAMask-HQ label order of jonathandinu/face-parsing (config.json id2label).
CELEBAMASK_LABELS = [
    "background", "skin", "nose", "eye_g", "l_eye", "r_eye", "l_brow", "r_brow", "l_ear", "r_ear",
    "mouth", "u_lip", "l_lip", "hair", "hat", "ear_r", "neck_l", "neck", "cloth",
]  # fmt: skip

TINY_EMBED_DIM = 32


def tiny_unet_config() -> dict:
    return dict(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=TINY_EMBED_DIM,
        attention_head_dim=4,
        norm_num_groups=8,
    )


def tiny_vae_config() -> dict:
    return dict(
        in_channels=3,
        out_channels=3,
        # four blocks like SD's VAE: 8x downsampling, so 64 px views -> 8x8 latents (= unet sample_size)
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 16, 16, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=64,
        scaling_factor=0.18215,
    )


def tiny_clip_vision_config() -> dict:
    return dict(
        hidden_size=32,
        projection_dim=TINY_EMBED_DIM,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=32,
        patch_size=8,
    )


def tiny_scheduler_config() -> dict:
    # Same keys and values as Stable Diffusion 1.x's scheduler_config.json (a PNDM config there).
    return dict(
        skip_prk_steps=True,
        trained_betas=None,
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )


def tiny_segformer_config() -> dict:
    return dict(
        num_channels=3,
        num_encoder_blocks=2,
        depths=[1, 1],
        sr_ratios=[2, 1],
        hidden_sizes=[8, 16],
        patch_sizes=[7, 3],
        strides=[4, 2],
        num_attention_heads=[1, 2],
        mlp_ratios=[2, 2],
        decoder_hidden_size=16,
        num_labels=len(CELEBAMASK_LABELS),
        id2label={i: n for i, n in enumerate(CELEBAMASK_LABELS)},
        label2id={n: i for i, n in enumerate(CELEBAMASK_LABELS)},
    )


def write_tiny_sd_image_variations(folder: str | Path, seed: int = 0) -> Path:
    """Save a tiny sd-image-variations repo (hub layout) into `folder`; returns it."""
    # diffusers.models, not diffusers: the top-level __init__ types these as its torch-less dummies
    from diffusers.models import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    UNet2DConditionModel(**tiny_unet_config()).save_pretrained(folder / "unet")
    AutoencoderKL(**tiny_vae_config()).save_pretrained(folder / "vae")
    CLIPVisionModelWithProjection(CLIPVisionConfig(**tiny_clip_vision_config())).save_pretrained(
        folder / "image_encoder"
    )
    CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}, do_center_crop=True
    ).save_pretrained(folder / "feature_extractor")
    sched = {"_class_name": "PNDMScheduler", "_diffusers_version": "0.8.0", **tiny_scheduler_config()}
    (folder / "scheduler").mkdir(exist_ok=True)
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(sched, indent=2))
    index = {
        "_class_name": "StableDiffusionImageVariationPipeline",
        "feature_extractor": ["transformers", "CLIPImageProcessor"],
        "image_encoder": ["transformers", "CLIPVisionModelWithProjection"],
        "scheduler": ["diffusers", "PNDMScheduler"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))
    return folder


def write_tiny_face_parsing(folder: str | Path, seed: int = 0) -> Path:
    """Save a tiny face-parsing repo (Segformer, 19 labels) into `folder`; returns it."""
    from transformers import SegformerConfig, SegformerForSemanticSegmentation, SegformerImageProcessor

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    SegformerForSemanticSegmentation(SegformerConfig(**tiny_segformer_config())).save_pretrained(folder)
    SegformerImageProcessor(size={"height": 64, "width": 64}, do_reduce_labels=False).save_pretrained(folder)
    return folder


def write_tiny_models(root: str | Path, seed: int = 0) -> dict[str, Path]:
    """Both tiny repos under `root`; returns {lock name: folder}."""
    root = Path(root)
    return {
        "sd-image-variations": write_tiny_sd_image_variations(root / "sd-image-variations", seed),
        "face-parsing": write_tiny_face_parsing(root / "face-parsing", seed),
    }
