"""The errors a user sees, and the exit code each one maps to.

Exit codes (the CLI contract, also documented in README.md):
  0  everything done
  1  a batch finished but some inputs failed
  2  usage error, bad arguments, or a single bad input file
  3  environment: missing FLAME model or weights, no GPU when one was required

Library code raises these with one line that names the file and the problem, and a setting by
its field name (`setting=`); the CLI prints that line with the setting's flag (no traceback) and
exits with `exit_code`. Advice that names other settings in passing writes each as `name` in
backticks and lists it in `mentions=` ("... or pass `force`", mentions=("force",)); the CLI shows
its flag there too ("... or pass --force"). Library messages never spell a CLI flag themselves.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Callable, Iterable

EXIT_OK = 0
EXIT_SOME_FAILED = 1
EXIT_USAGE = 2
EXIT_ENVIRONMENT = 3


class AvatarError(Exception):
    """Base class: a problem the user can act on, shown as one line."""

    exit_code: int = EXIT_USAGE

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        setting: str | None = None,
        mentions: Iterable[str] = (),
    ):
        """setting: the config field or argument the message is about; the message then opens with
        that name ("max_side 8: ..."), and the CLI shows its own flag there instead (`named`).
        mentions: other settings the message names as `name` (in backticks), shown as flags likewise."""
        self.path = None if path is None else Path(path)
        self.raw_message = message
        self.setting = setting
        self.mentions = tuple(mentions)
        super().__init__(f"{path}: {message}" if path is not None else message)

    def named(self, label: Callable[[str], str]) -> AvatarError:
        """A copy that shows each setting as `label(setting)` (the CLI: its flag, "max_side" -> "--size"):
        at the opening of the message and at each of its mentions."""
        text = self.raw_message
        if self.setting is not None and text.startswith(self.setting):
            text = label(self.setting) + text[len(self.setting) :]
        text = label_mentions(text, self.mentions, label)
        if text == self.raw_message:
            return self
        out = copy.copy(self)
        out.raw_message, out.setting, out.mentions = text, None, ()
        out.args = (f"{self.path}: {text}" if self.path is not None else text,)
        return out


def label_mentions(text: str, mentions: Iterable[str], label: Callable[[str], str]) -> str:
    """`text` with each mentioned setting, written `name`, shown as `label(name)` instead."""
    for name in mentions:
        text = text.replace(f"`{name}`", label(name))
    return text


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
