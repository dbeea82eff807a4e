"""Randomly initialised face-alignment weights in the real file formats (for tests).

face-alignment's REAL networks (models.FAN(4), detection.sfd.net_s3fd.s3fd) with
random weights, saved the way face-alignment loads the published files:
torch.save(state_dict) under the published file names. Tests point the
resolver at them (AVATAR_WEIGHTS_FAN_2D / AVATAR_WEIGHTS_S3FD, see `env`) and
run the real code path; FAN's output is meaningless, so tests check shapes,
dtypes and flow.

The detector is made deterministic: every classifier/regressor head of S3FD
gets zero weights and a chosen bias, so its output does not depend on the
image's content, only on its size. `sfd` picks what it finds:
  "none"  no face anywhere (background logit +10 on every level);
  "one"   a box of side ~SIDE_ONE px (score ~1) on every cell of the coarsest
          level, centred at (64 + 128 i, 64 + 128 j) in face-alignment's box
          frame. Its feature map has ceil(side / 64) cells per side, so a
          128 px image also gets boxes centred at 192, wholly outside it;
          avatarcli.landmarks.detect drops boxes mostly outside the image,
          leaving exactly ONE face for images up to 128 px: (14, 14, 114, 114)
          in box-corner coordinates, (13.5, 13.5, 113.5, 113.5) in pixel-centre ones;
  "many"  those boxes plus a grid of 64 px boxes from the stride-16 level
          (score ~0.73) that survive NMS: in a 128 px image, after the inside
          filter, the 100 px face (largest) and 9 faces of 64 px.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from avatarcli.weights import env_var_for

FAN_FILE = "2DFAN4-11f355bf06.pth.tar"
SFD_FILE = "s3fd-619a316812.pth"
SIDE_ONE = 100.0  # px, the "one" face's box side
_CONF = ["conv3_3_norm", "conv4_3_norm", "conv5_3_norm", "fc7", "conv6_2", "conv7_2"]
_ANCHOR = {"conv3_3_norm": 16, "conv4_3_norm": 32, "conv5_3_norm": 64, "fc7": 128, "conv6_2": 256, "conv7_2": 512}


def fan_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    from face_alignment.models import FAN

    torch.manual_seed(seed)
    return FAN(4).state_dict()


def sfd_state_dict(mode: str = "one", seed: int = 0) -> dict[str, torch.Tensor]:
    from face_alignment.detection.sfd.net_s3fd import s3fd

    if mode not in ("none", "one", "many"):
        raise ValueError(f"sfd mode {mode!r}: expected none, one or many")
    torch.manual_seed(seed)
    sd = s3fd().state_dict()
    fire = {"none": {}, "one": {"conv7_2": 10.0}, "many": {"conv7_2": 10.0, "conv5_3_norm": 1.0}}[mode]
    for level in _CONF:
        conf_w, conf_b = sd[f"{level}_mbox_conf.weight"], sd[f"{level}_mbox_conf.bias"]
        loc_w, loc_b = sd[f"{level}_mbox_loc.weight"], sd[f"{level}_mbox_loc.bias"]
        conf_w.zero_()
        loc_w.zero_()
        loc_b.zero_()
        face = fire.get(level)
        if face is None:  # background logit(s) +10, face -10: P(face) ~ 2e-9
            conf_b.fill_(10.0)
            conf_b[-1] = -10.0
        else:  # background 0, face `face`: P(face) = sigmoid(face)
            conf_b.zero_()
            conf_b[-1] = face
        if level == "conv7_2":
            # box side = anchor * exp(loc * 0.2): shrink the 512 px anchor to SIDE_ONE
            loc_b[2:] = math.log(SIDE_ONE / _ANCHOR[level]) / 0.2
    return sd


def write_tiny_face_alignment(folder: str | Path, sfd: str = "one", seed: int = 0) -> dict[str, Path]:
    """Write folder/fan-2d/<FAN_FILE> and folder/s3fd/<SFD_FILE>; returns {model name: file}."""
    folder = Path(folder)
    out = {"fan-2d": folder / "fan-2d" / FAN_FILE, "s3fd": folder / "s3fd" / SFD_FILE}
    for p in out.values():
        p.parent.mkdir(parents=True, exist_ok=True)
    if not out["fan-2d"].exists():
        torch.save(fan_state_dict(seed), out["fan-2d"])
    torch.save(sfd_state_dict(sfd, seed), out["s3fd"])
    return out


def env(files: dict[str, Path]) -> dict[str, str]:
    """The override env vars that make the resolver use `files`."""
    return {env_var_for(name): str(p.parent) for name, p in files.items()}
