"""The batch policy of every command that takes several inputs (landmarks, encode, reconstruct).

1. Every input is checked before any model is loaded (`Batch.check`).
2. The models are loaded once, and only when some input is left (`Batch.pending`).
3. Each remaining input is worked on; one failing is recorded and the others go on
   (`Batch.attempt`). A problem of the machine (EnvironmentProblem: weights, CUDA, an
   unwritable folder) stops the whole batch.
4. The exit code (`exit_code`): one input given -> its own error is raised as is (its own
   exit code); several -> 1 when any failed, else 0.

The output rule (`wants_folder`, `output_paths`): `-o` names a folder when it exists as
one, ends with a path separator or has no suffix, and always when there are several
inputs; a folder gets one NAME<suffix> per input.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Generic, Sequence, TypeVar

from avatarcli.errors import EXIT_OK, EXIT_SOME_FAILED, AvatarError, EnvironmentProblem, InputError

T = TypeVar("T")
Item = TypeVar("Item")


def wants_folder(out: str | Path) -> bool:
    """Does the output path name a folder (exists as one, ends with a separator, has no suffix)?
    (A Path has lost its trailing separator: give the text as typed where there is one.)"""
    path = Path(out)
    return path.is_dir() or str(out).endswith(("/", "\\", os.sep)) or path.suffix == ""


def output_paths(names: Sequence[str], out: Path, suffix: str, several: bool) -> list[Path]:
    """The output of each input NAME: `out` itself for one input and a file name; else out/NAME<suffix>."""
    dup = sorted({n for n in names if list(names).count(n) > 1})
    if dup:
        raise InputError(f"several inputs are named {', '.join(dup)}: their outputs would overwrite each other")
    if not (several or wants_folder(out)):
        return [out]
    if out.exists() and not out.is_dir():
        raise InputError("several inputs need an output folder, and this is a file", path=out)
    return [out / f"{n}{suffix}" for n in names]


def one_line(e: BaseException) -> str:
    """The one-line message of a failure (an unexpected exception is marked as internal)."""
    if isinstance(e, AvatarError):
        return " ".join(str(e).split())
    return f"internal error: {type(e).__name__}: {' '.join(str(e).split())}"


@dataclass
class Batch(Generic[Item]):
    """Bookkeeping of the policy over `items`; `on_failure(index, error)` is told of each failure."""

    items: Sequence[Item]
    on_failure: Callable[[int, BaseException], None] | None = None
    failed: dict[int, BaseException] = field(default_factory=dict)

    @property
    def single(self) -> bool:
        return len(self.items) == 1

    def fail(self, i: int, e: BaseException) -> None:
        self.failed[i] = e
        if self.on_failure is not None:
            self.on_failure(i, e)

    def check(self, i: int, fn: Callable[[], T], path: Path | None = None) -> T | None:
        """Step 1 for input i: fn's value, or None with the input's problem recorded. A crash of a
        reader is still this input's problem (an InputError naming `path` and the exception)."""
        try:
            return fn()
        except AvatarError as e:
            self.fail(i, e)
        except Exception as e:  # noqa: BLE001 - a reader crash is still this input's problem
            self.fail(i, InputError(f"cannot read ({type(e).__name__}: {e})", path=path))
        return None

    def attempt(self, i: int, fn: Callable[[], T]) -> T | None:
        """Step 3 for input i: fn's value, or None with the failure recorded (the batch goes on)."""
        try:
            return fn()
        except EnvironmentProblem:
            raise  # the machine, not the input: stop the batch (exit 3)
        except Exception as e:  # noqa: BLE001 - one input failing never stops the batch
            self.fail(i, e)
        return None

    def pending(self) -> list[int]:
        """The inputs not failed so far, in order."""
        return [i for i in range(len(self.items)) if i not in self.failed]


def exit_code(failures: Sequence[BaseException], single: bool) -> int:
    """Step 4: one input -> its error raised as is; several -> 1 when any failed, else 0."""
    if failures and single:
        raise failures[0]
    return EXIT_SOME_FAILED if failures else EXIT_OK


__all__ = ["Batch", "exit_code", "one_line", "output_paths", "wants_folder"]
