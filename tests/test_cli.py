"""The command line itself: help with examples everywhere, version, usage errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from avatarcli.cli import app, main
from avatarcli.commands import COMMAND_MODULES

COMMANDS = [m.replace("_", "-") for m in COMMAND_MODULES]
WEIGHTS_SUB = ["list", "fetch", "verify", "path"]


def test_every_module_registers_a_command():
    import typer

    names = {c.name for c in typer.main.get_command(app).commands.values()}
    assert set(COMMANDS) <= names, set(COMMANDS) - names


def test_root_help_lists_stages_and_examples(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "Examples:" in out
    for name in COMMANDS:
        assert name in out


@pytest.mark.parametrize("cmd", [[c] for c in COMMANDS if c != "weights"] + [["weights", s] for s in WEIGHTS_SUB])
def test_command_help_has_examples(cmd, capsys):
    assert main(cmd + ["--help"]) == 0
    out = capsys.readouterr().out
    assert "Examples:" in out, f"`avatar {' '.join(cmd)} --help` shows no examples"
    assert "avatar " + cmd[0] in out.split("Examples:")[1]


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("avatarcli ")


@pytest.mark.parametrize("argv", [["no-such-command"], ["fit-flame", "--no-such-option", "x.npz"]])
def test_usage_errors_exit_2(argv, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err


def test_console_script_entry_point_runs():
    r = subprocess.run([sys.executable, "-m", "avatarcli", "--version"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("avatarcli ")


def test_error_line_keeps_brackets_in_paths(tmp_path, capsys):
    """The one-line error is printed verbatim: Rich markup in a path must not vanish."""
    missing = tmp_path / "[missing]" / "x.landmarks.npz"
    assert main(["fit-flame", str(missing), "-o", str(tmp_path / "out.npz")]) == 2
    err = capsys.readouterr().err
    assert "[missing]" in err and "Traceback" not in err
    assert len([ln for ln in err.splitlines() if ln.strip()]) == 1


def test_short_options_agree_across_commands():
    """A long option has the same short form in every command that takes it (or none anywhere),
    and a short form means the same long option everywhere (issue 13, item 10)."""
    import typer

    from avatarcli.cli import app

    by_long: dict[str, dict[str, tuple[str, ...]]] = {}
    by_short: dict[str, set[str]] = {}

    def walk(command, path):
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, path + [name])
        for p in getattr(command, "params", []):
            if p.param_type_name != "option":
                continue
            opts = p.opts + p.secondary_opts
            shorts = tuple(sorted(o for o in opts if not o.startswith("--")))
            for long in (o for o in opts if o.startswith("--")):
                by_long.setdefault(long, {})[" ".join(path) or "avatar"] = shorts
                for s in shorts:
                    by_short.setdefault(s, set()).add(long)

    walk(typer.main.get_command(app), [])
    differing = {k: v for k, v in by_long.items() if len(set(v.values())) > 1}
    assert not differing, differing
    ambiguous = {k: v for k, v in by_short.items() if len(v) > 1}
    assert not ambiguous, ambiguous
    assert by_long["--landmarks"]["reconstruct"] == ("-l",) and by_long["--output"]["render"] == ("-o",)


@pytest.mark.parametrize("argv", [["--help"], ["animate", "--help"]])
def test_help_examples_that_need_flame_show_it(capsys, argv):
    """Every example line of a command that needs FLAME names --flame (issue 13, item 6)."""
    assert main(argv) == 0
    text = capsys.readouterr().out
    lines = [ln.strip() for ln in text.splitlines() if ln.strip().startswith(("avatar animate", "avatar reconstruct"))]
    assert lines and all("--flame" in ln for ln in lines if not ln.startswith("avatar reconstruct photos/")), lines
    assert "AVATAR_FLAME" in text


def test_readme_and_docs_links_resolve():
    """Relative links of README.md and docs/*.md point at files of the repository (issue 13, item 7)."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    pages = [root / "README.md", *sorted((root / "docs").glob("*.md"))]
    assert len(pages) >= 3, "docs/architecture.md and docs/formats.md exist"
    for page in pages:
        for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" not in target:
                assert (page.parent / target).exists(), f"{page.name}: broken link {target}"
    assert "docs/architecture.md" in (root / "README.md").read_text()
