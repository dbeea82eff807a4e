"""The errors a user sees, and the exit code each one maps to.

Exit codes (the CLI contract, also documented in README.md):
  0  everything done
  1  a batch finished but some inputs failed
  2  usage error, bad arguments, or a single bad input file
  3  environment: missing FLAME model or weights, no GPU when one was required

Library code raises these with one line that names the file and the problem;
the CLI prints that line (no traceback) and exits with `exit_code`.
"""

from __future__ import annotations

from pathlib import Path

EXIT_OK = 0
EXIT_SOME_FAILED = 1
EXIT_USAGE = 2
EXIT_ENVIRONMENT = 3


class AvatarError(Exception):
    """Base class: a problem the user can act on, shown as one line."""

    exit_code: int = EXIT_USAGE

    def __init__(self, message: str, *, path: str | Path | None = None):
        self.path = None if path is None else Path(path)
        self.raw_message = message
        super().__init__(f"{path}: {message}" if path is not None else message)


class InputError(AvatarError):
    """A bad input file or argument (unreadable, wrong format, wrong shape, NaN...)."""

    exit_code = EXIT_USAGE


class ArtifactError(InputError):
    """An artifact file (npz/ply/safetensors) that fails validation."""


class NoFaceError(InputError):
    """No face was found in an image."""


class FitDivergedError(AvatarError):
    """An optimisation produced NaN or inf (never reported as a figure)."""

    exit_code = EXIT_USAGE


class EnvironmentProblem(AvatarError):
    """Something the machine lacks: FLAME model, weights, CUDA, a writable folder."""

    exit_code = EXIT_ENVIRONMENT


class MissingModelError(EnvironmentProblem):
    """A pinned model is not available locally; the message names the fetch command."""


class UnsafePickleError(InputError):
    """A pickle asked for a global outside the allowed list; nothing was executed."""
