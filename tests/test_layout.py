"""The package layout, read from the source with `ast`: no import cycles between the packages of
avatarcli, nor between its modules (every import counts: top-level, inside functions and under
TYPE_CHECKING, so a lazy import cannot hide a cycle)."""

from __future__ import annotations

import ast
from pathlib import Path

import avatarcli

ROOT = Path(avatarcli.__file__).parent


def _module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported_modules(path: Path, root: Path = ROOT) -> set[str]:
    """Every avatarcli module `path` imports (relative imports resolved)."""
    name = _module_name(path, root)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.add(mod)
            out |= {f"{mod}.{a.name}" for a in node.names}  # `from pkg import module`
    return {m for m in out if m == "avatarcli" or m.startswith("avatarcli.")}


def _package(module: str) -> str:
    """avatarcli.flame.fit -> flame; avatarcli.geometry -> geometry (top-level modules are their own)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def package_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """package -> the other packages it imports."""
    graph: dict[str, set[str]] = {}
    for path in sorted(root.rglob("*.py")):
        src = _package(_module_name(path, root))
        graph.setdefault(src, set())
        for mod in _imported_modules(path, root):
            dst = _package(mod)
            if dst != src and dst != "avatarcli":
                graph[src].add(dst)
    return graph


def module_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """module -> the other avatarcli modules it imports (`from pkg import module` counts as the module)."""
    paths = sorted(root.rglob("*.py"))
    names = {_module_name(p, root) for p in paths}
    return {
        _module_name(p, root): {m for m in _imported_modules(p, root) if m in names}
        - {_module_name(p, root), "avatarcli"}
        for p in paths
    }


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle [a, b, ..., a] of the directed graph, or None (depth-first search)."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def visit(v: str) -> list[str] | None:
        state[v] = 1
        path.append(v)
        for w in sorted(graph.get(v, ())):
            if state.get(w) == 1:
                return path[path.index(w) :] + [w]
            if w not in state and (c := visit(w)):
                return c
        path.pop()
        state[v] = 2
        return None

    for v in sorted(graph):
        if v not in state and (c := visit(v)):
            return c
    return None


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set(), "d": {"a", "c"}}) is None


def test_package_graph_reads_function_level_imports(tmp_path):
    pkg = tmp_path / "avatarcli"
    (pkg / "render").mkdir(parents=True)
    (pkg / "gaussians").mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "render" / "__init__.py").write_text("")
    (pkg / "gaussians" / "__init__.py").write_text("")
    (pkg / "render" / "api.py").write_text("def f():\n    from ..gaussians import model\n")
    (pkg / "gaussians" / "fit.py").write_text("from avatarcli.render.api import f\n")
    graph = package_graph(pkg)
    assert graph["render"] == {"gaussians"} and graph["gaussians"] == {"render"}
    assert find_cycle(graph) == ["gaussians", "render", "gaussians"]


def test_packages_import_each_other_without_cycles():
    graph = package_graph()
    assert {"flame", "gaussians", "render", "stages", "commands"} <= set(graph)
    assert find_cycle(graph) is None, f"package import cycle: {' -> '.join(find_cycle(graph) or [])}"


def test_modules_import_each_other_without_cycles():
    graph = module_graph()
    assert "avatarcli.flame.loader" in graph["avatarcli.stages.render"] | graph["avatarcli.reconstruct.models"]
    assert find_cycle(graph) is None, f"module import cycle: {' -> '.join(find_cycle(graph) or [])}"


MAX_LINES = 80  # the project's rule: functions stay short
# functions allowed to be longer, with the reason (none at present)
LONG_ALLOWED: dict[str, str] = {}


def function_lengths(root: Path = ROOT) -> list[tuple[str, int, int]]:
    """(module:function, lines from `def` to the end, lines of code after the signature and docstring)."""
    out = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            body = node.body
            if isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) and len(body) > 1:
                body = body[1:]
            end = node.end_lineno or node.lineno
            out.append((f"{_module_name(path, root)}:{node.name}", end - node.lineno + 1, end - body[0].lineno + 1))
    return out


def test_function_lengths_are_measured(tmp_path):
    pkg = tmp_path / "avatarcli"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    body = "\n".join(f"    x{i} = {i}" for i in range(90))
    (pkg / "m.py").write_text(f'def f(\n    a,\n    b,\n):\n    """doc."""\n{body}\n')
    assert function_lengths(pkg) == [("avatarcli.m:f", 95, 90)]


def test_functions_are_short():
    """Every function's code is at most MAX_LINES long; outside the commands (whose signatures are
    the Typer option declarations) the whole function, signature and docstring included, is too."""
    long = [
        f"{name} ({total} lines, {code} of code)"
        for name, total, code in function_lengths()
        if name not in LONG_ALLOWED
        and (code > MAX_LINES or (total > MAX_LINES and not name.startswith("avatarcli.commands.")))
    ]
    assert not long, "functions over the limit (split them, or allow one in LONG_ALLOWED with a reason): " + ", ".join(
        long
    )
