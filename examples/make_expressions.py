"""Write the example animation files in examples/expressions/ (pose-only).

    python examples/make_expressions.py [OUT_DIR]

Every file here moves FLAME *joints* only (jaw, neck, global rotation, eyes):
they need no expression basis and mean the same thing for every FLAME release.
None of them holds expression coefficients: a smile or a frown needs `expr`
coefficients from a real FLAME tracker (e.g. a GaussianAvatars / VHAP
flame_param.npz), which `avatar animate --expr` reads as it is.

    jaw_open.npz     jaw opens (0 -> 0.35 rad about x) and closes, twice      jaw_pose
    nod.npz          two nods (neck pitch, +-0.25 rad)                         neck_pose
    head_turn.npz    head turns left, right and back (global yaw, +-0.6 rad)  global_pose
    look_around.npz  eyes circle (both eyes, 0.25 rad)                         eyes_pose

Axis-angle, radians, FLAME space (y up, +z out of the face); 30 fps.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

FPS = 30.0


def _ease(u: np.ndarray) -> np.ndarray:
    """0 -> 1 -> 0 over u in [0, 1], smooth at both ends (raised cosine)."""
    return 0.5 - 0.5 * np.cos(2 * np.pi * u)


def jaw_open(n: int = 60) -> dict[str, np.ndarray]:
    u = np.linspace(0.0, 2.0, n) % 1.0  # two open/close cycles
    jaw = np.zeros((n, 3), np.float32)
    jaw[:, 0] = 0.35 * _ease(u)
    return {"jaw_pose": jaw}


def nod(n: int = 60) -> dict[str, np.ndarray]:
    t = np.linspace(0.0, 1.0, n)
    neck = np.zeros((n, 3), np.float32)
    neck[:, 0] = 0.25 * np.sin(2 * np.pi * 2 * t)  # + pitches the face down, - up
    return {"neck_pose": neck}


def head_turn(n: int = 90) -> dict[str, np.ndarray]:
    t = np.linspace(0.0, 1.0, n)
    rot = np.zeros((n, 3), np.float32)
    rot[:, 1] = 0.6 * np.sin(2 * np.pi * t)  # yaw about y: left, right, back to front
    return {"global_pose": rot}


def look_around(n: int = 90) -> dict[str, np.ndarray]:
    t = np.linspace(0.0, 1.0, n)
    eye = np.zeros((n, 3), np.float32)
    eye[:, 0] = 0.25 * np.sin(2 * np.pi * t)  # pitch
    eye[:, 1] = 0.25 * np.sin(2 * np.pi * t + np.pi / 2) * np.sin(np.pi * t)  # yaw, fading in and out
    return {"eyes_pose": np.concatenate([eye, eye], axis=1).astype(np.float32)}  # left, right


ANIMATIONS = {"jaw_open": jaw_open, "nod": nod, "head_turn": head_turn, "look_around": look_around}


def main(out_dir: str | Path = Path(__file__).parent / "expressions") -> list[Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, make in ANIMATIONS.items():
        path = out_dir / f"{name}.npz"
        arrays = {k: v.astype(np.float32) for k, v in make().items()}
        np.savez_compressed(path, fps=np.float32(FPS), **arrays)
        written.append(path)
    return written


if __name__ == "__main__":
    for p in main(*sys.argv[1:2]):
        print(p)
