"""The `avatar` command line: a thin layer over the library.

Each subcommand lives in avatarcli/commands/<name>.py and registers itself
here. `main()` turns every AvatarError into one line on stderr and its exit
code (see avatarcli.errors); no traceback reaches the user unless
AVATAR_DEBUG=1 is set.
"""

from __future__ import annotations

import importlib
import os
import sys
import types

import click
import typer
from rich.markup import escape

from avatarcli import __version__
from avatarcli.commands import COMMAND_MODULES
from avatarcli.commands.common import flag_names
from avatarcli.errors import EXIT_ENVIRONMENT, EXIT_USAGE, AvatarError
from avatarcli.progress import console, set_quiet

_typer_click_exc: types.ModuleType
try:  # typer >= 0.25 ships its own copy of click; its commands raise that copy's exceptions
    from typer._click import exceptions as _typer_click_exc
except ImportError:  # pragma: no cover - older typer uses click itself
    _typer_click_exc = click.exceptions

_EXIT = tuple({click.exceptions.Exit, getattr(typer, "Exit", click.exceptions.Exit)})
# typer's copy of ClickException is another class with the same interface (show, exit_code)
_CLICK_ERROR: tuple[type[click.ClickException], ...] = tuple({click.ClickException, _typer_click_exc.ClickException})
_ABORT = tuple({click.exceptions.Abort, getattr(typer, "Abort", click.exceptions.Abort)})

HELP = """\
Turn one photo of a face into an animatable 3D Gaussian Splatting head.

\b
Examples:
  avatar reconstruct photo.jpg -o head.ply --flame ~/flame
  avatar reconstruct photos/ -o heads/ --workdir work/ --json
  avatar render head.ply -o turntable.mp4
  avatar animate head.ply --expr examples/expressions/jaw_open.npz -o jaw.mp4 --flame ~/flame

\b
Stages, each runnable alone:
  landmarks -> fit-flame -> encode -> init-gaussians -> denoise -> render / animate

FLAME: every command from fit-flame on (reconstruct, animate, ...) needs the FLAME
model: pass --flame PATH or set AVATAR_FLAME once (then --flame can be left out). It
is licensed: register at https://flame.is.tue.mpg.de. `avatar doctor` checks the setup.
"""

app = typer.Typer(
    name="avatar",
    help=HELP,
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"avatarcli {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
    quiet: bool = typer.Option(
        False, "--quiet", "-q", help="No progress bars or status lines (errors and warnings still print)."
    ),
) -> None:
    set_quiet(quiet)


def _register_all() -> None:
    for name in COMMAND_MODULES:
        importlib.import_module(f"avatarcli.commands.{name}").register(app)


_register_all()


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `avatar` console script. Returns the exit code."""
    debug = os.environ.get("AVATAR_DEBUG") == "1"
    cmd = typer.main.get_command(app)
    try:
        with flag_names():  # library errors and warnings show each setting as its flag
            rv = cmd.main(args=argv, prog_name="avatar", standalone_mode=False)
        return int(rv) if isinstance(rv, int) else 0
    except _EXIT as e:
        return e.exit_code
    except _CLICK_ERROR as e:
        e.show()
        return EXIT_USAGE if e.exit_code not in (0, 1) else e.exit_code or EXIT_USAGE
    except _ABORT:
        console.print("aborted")
        return 130
    except KeyboardInterrupt:
        console.print("interrupted")
        return 130
    except AvatarError as e:
        if debug:
            console.print_exception()
        console.print(f"[red]error:[/red] {escape(str(e))}", markup=True, soft_wrap=True)
        return e.exit_code
    except OSError as e:  # the filesystem or the OS refused (a read-only mount, /proc, a full disk): exit 3
        if debug:
            console.print_exception()
        where = f"{e.filename}: " if e.filename else ""
        console.print(f"[red]error:[/red] {escape(where + (e.strerror or str(e)))}", markup=True, soft_wrap=True)
        return EXIT_ENVIRONMENT
    except Exception as e:  # noqa: BLE001 - last line of defence: one line, not a traceback
        if debug:
            console.print_exception()
        console.print(
            f"[red]internal error:[/red] {type(e).__name__}: {escape(str(e))} (re-run with AVATAR_DEBUG=1 for the traceback, and please report it)",
            soft_wrap=True,
        )
        return 1


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
