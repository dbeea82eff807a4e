"""Library messages name settings, never CLI flags: a setting is written as its field name (the
opening `setting=`, or `name` in backticks listed in `mentions=`), and the CLI shows its flag there
(avatarcli/errors.py, commands/common.flag_names). The scan reads every string literal of the
library with `ast` (f-strings as their template), leaving out docstrings, the CLI (cli.py,
commands/) and command lines the user is told to run (`avatar ...`)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import avatarcli
from avatarcli.commands.common import error_line, flag_for, flag_names, with_flags
from avatarcli.errors import InputError
from avatarcli.progress import warn

ROOT = Path(avatarcli.__file__).parent
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
COMMAND = re.compile(r"`avatar [^`]*`")  # a command line in backticks: its flags are the user's to type


def _docstrings(tree: ast.AST) -> set[int]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                out.add(id(first.value))
    return out


def _template(node: ast.JoinedStr) -> str:
    return "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)


def flags_in_strings(source: str) -> list[tuple[int, str]]:
    """(line, flag) for each CLI flag in the non-docstring string literals of `source`."""
    tree = ast.parse(source)
    skip = _docstrings(tree)
    for node in ast.walk(tree):  # the pieces of an f-string are read as the whole template
        if isinstance(node, ast.JoinedStr):
            skip |= {id(v) for v in node.values}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            text = _template(node)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            text = node.value
        else:
            continue
        if text.startswith("avatar "):  # the whole string is a command line (weights.lock's fix)
            continue
        found += [(node.lineno, f) for f in FLAG.findall(COMMAND.sub("", text))]
    return sorted(found)


def library_files() -> list[Path]:
    return [p for p in sorted(ROOT.rglob("*.py")) if p.name != "cli.py" and "commands" not in p.relative_to(ROOT).parts]


def test_the_scan_finds_flags_in_messages_and_fstrings():
    src = '''
"""Module docstring: --flame is fine here."""
def f(x):
    """--force in a docstring is fine."""
    if x:
        raise ValueError("pass --force to go on")
    warn(f"{x}: used anyway (--fps {x})")
    run = "run `avatar weights convert x --from FILE`"  # a command to type: fine
    return "avatar weights convert x --from FILE", "a-b --  c", "pass `force`"
'''
    assert flags_in_strings(src) == [(6, "--force"), (7, "--fps")]


def test_library_messages_name_no_cli_flag():
    assert library_files() and not any("commands" in p.parts for p in library_files())
    found = [f"{p.relative_to(ROOT.parent)}:{line}: {flag}" for p in library_files() for line, flag in flags_in_strings(p.read_text("utf-8"))]  # fmt: skip
    assert not found, "library strings name CLI flags (use setting= / mentions=):\n" + "\n".join(found)


def test_mentions_read_as_settings_in_the_library_and_as_flags_in_the_cli():
    e = InputError(
        "landmarks of another photo; pass `force`, or `max_side`", path="a.npz", mentions=("force", "max_side")
    )
    assert str(e) == "a.npz: landmarks of another photo; pass `force`, or `max_side`"
    assert str(e.named(flag_for)) == "a.npz: landmarks of another photo; pass --force, or --max-side"
    with pytest.raises(InputError) as got:
        with flag_names(max_side="--size"):
            raise e
    assert str(got.value) == "a.npz: landmarks of another photo; pass --force, or --size"
    assert flag_for("out") == "-o" and with_flags("give `out` OUT", ["out"]) == "give -o OUT"
    # a batch line (the error is caught and printed, not raised) reads the same
    with flag_names(max_side="--size"):
        assert error_line(e) == "a.npz: landmarks of another photo; pass --force, or --size"


def test_warnings_show_flags_only_inside_the_cli(capsys):
    warn("used anyway (`force`)", mentions=("force",))
    assert "used anyway (`force`)" in capsys.readouterr().err
    with flag_names():
        warn("used anyway (`force`)", mentions=("force",))
    assert "used anyway (--force)" in capsys.readouterr().err
    warn("used anyway (`force`)", mentions=("force",))  # the CLI's labels end with its block
    assert "used anyway (`force`)" in capsys.readouterr().err
