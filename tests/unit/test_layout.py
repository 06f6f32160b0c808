"""The layout issue's guarantees: no import cycle in the package, small modules, the CLI imported statically."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"
MAX_LINES = 420  # "roughly under 400 lines": one job per module


def _module_name(path: Path, base: Path) -> str:
    parts = list(path.relative_to(base).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p, SRC): p for p in (SRC / "torchrig").rglob("*.py")}


def _imports(path: Path, name: str, known: dict[str, Path]) -> set[str]:
    """The torchrig modules ``path`` imports anywhere (top level or inside functions: a lazy import that only
    breaks a circle is still a circle)."""
    is_pkg = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] == "torchrig")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = name if is_pkg else name.rpartition(".")[0]
                for _ in range(node.level - 1):
                    package = package.rpartition(".")[0]
                base = f"{package}.{node.module}" if node.module else package
            else:
                base = node.module or ""
            if base.split(".")[0] != "torchrig":
                continue
            for alias in node.names:  # `from torchrig.cli import run` imports the submodule torchrig.cli.run
                sub = f"{base}.{alias.name}"
                out.add(sub if sub in known else base)
    return {m for m in out if m in known and m != name}


def _graph() -> dict[str, set[str]]:
    known = _modules()
    return {name: _imports(path, name, known) for name, path in known.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set(), "c": {"a"}}) is None


def test_the_package_has_no_import_cycle() -> None:
    graph = _graph()
    assert len(graph) > 30 and graph["torchrig.cli"], "the walk sees the package"
    cycle = _cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_steps_have_their_folders() -> None:
    for step in ("matrix", "cli", "engine", "images", "results", "report"):
        assert (SRC / "torchrig" / step / "__init__.py").is_file(), step
    assert (SRC / "torchrig" / "settings.py").is_file() and (SRC / "torchrig" / "run.py").is_file()


@pytest.mark.parametrize("folder", ["src/torchrig", "tasks", "bench"])
def test_no_module_holds_more_than_one_job(folder: str) -> None:
    big = {str(p.relative_to(ROOT)): n for p in (ROOT / folder).rglob("*.py")
           if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not big, f"modules over {MAX_LINES} lines (split them by job): {big}"


def test_the_cli_imports_its_command_groups_statically() -> None:
    """A renamed command module must fail loudly, not vanish from the menu (no importlib, no swallowed errors)."""
    for path in (SRC / "torchrig" / "cli").glob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert "importlib" not in text and "ModuleNotFoundError" not in text, path.name
    main = (SRC / "torchrig" / "__main__.py").read_text(encoding="utf-8")
    assert "importlib" not in main


def test_no_sys_path_edits_in_tasks_bench_or_the_package() -> None:
    offenders = [str(p.relative_to(ROOT)) for folder in ("src/torchrig", "tasks", "bench")
                 for p in (ROOT / folder).rglob("*.py") if "sys.path.insert" in p.read_text(encoding="utf-8")
                 or "sys.path.append" in p.read_text(encoding="utf-8")]
    assert not offenders


def test_every_test_folder_is_a_package() -> None:
    """Each folder of tests is a package, so pytest names modules by their path (tests.unit.test_x) and helpers are
    imported as ``tests.<folder>.<helper>``, never as top-level modules found through sys.path."""
    folders = {p.parent for p in (ROOT / "tests").rglob("*.py")}
    assert sorted(str(f.relative_to(ROOT)) for f in folders if not (f / "__init__.py").is_file()) == []


def test_tests_import_their_helpers_through_the_package() -> None:
    """A test that says ``from images_support import ...`` works only while pytest happens to put that folder on
    sys.path; the package path works from anywhere."""
    helpers = {p.stem for p in (ROOT / "tests").rglob("*.py") if p.name not in ("__init__.py", "conftest.py")}
    offenders = []
    for path in (ROOT / "tests").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0
                     else [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            offenders += [f"{path.relative_to(ROOT)}:{node.lineno}: {n}" for n in names if n.split(".")[0] in helpers]
    assert offenders == []


MAX_FUNCTION_LINES = 80  # issue 23: a function a reader can hold at once


def long_functions(source: str, limit: int = MAX_FUNCTION_LINES) -> list[tuple[str, int, int]]:
    """(name, first line, length) of every function or method in ``source`` longer than ``limit`` lines, nested
    functions counted in their enclosing one as well as on their own."""
    return [(n.name, n.lineno, n.end_lineno - n.lineno + 1) for n in ast.walk(ast.parse(source))
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno is not None
            and n.end_lineno - n.lineno + 1 > limit]


@pytest.mark.parametrize("length", [2, MAX_FUNCTION_LINES - 1, MAX_FUNCTION_LINES, MAX_FUNCTION_LINES + 1, 300])
def test_the_length_rule_counts_def_to_last_line(length: int) -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(length - 1))
    for source in (f"def f():\n{body}\n", f"class C:\n    def m(self):\n{body.replace('    ', '        ')}\n"):
        found = long_functions(source)
        assert found == ([] if length <= MAX_FUNCTION_LINES else [(found[0][0], found[0][1], length)])


def test_no_function_in_the_package_tasks_or_bench_is_over_80_lines() -> None:
    long = [f"{p.relative_to(ROOT)}:{line} {name} ({n} lines)"
            for folder in (SRC / "torchrig", ROOT / "tasks", ROOT / "bench") for p in sorted(folder.rglob("*.py"))
            for name, line, n in long_functions(p.read_text(encoding="utf-8"))]
    assert not long, "split these into named steps:\n  " + "\n  ".join(long)
