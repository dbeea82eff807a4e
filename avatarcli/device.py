"""`--device auto|cpu|cuda[:N]` resolution, shared by every stage."""

from __future__ import annotations

import torch

from avatarcli.errors import EnvironmentProblem, InputError


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    """'auto' picks CUDA when present; asking for CUDA without one is an environment error."""
    if isinstance(spec, torch.device):
        return spec
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise EnvironmentProblem(
                f"device {spec}: no CUDA GPU is available on this machine (use cpu)", setting="device"
            )
        dev = torch.device(spec)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise EnvironmentProblem(
                f"device {spec}: only {torch.cuda.device_count()} GPU(s) present", setting="device"
            )
        return dev
    raise InputError(f"device {spec!r}: expected auto, cpu, cuda or cuda:N", setting="device")
