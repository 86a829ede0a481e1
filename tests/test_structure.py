"""The shape of the code: imports go one way (core <- Ray runtime <- Ray Train run <- sweeps <- CLI), no
module reaches into another's private names, and ruff (pyflakes and import order) passes."""
from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
PACKAGE = ROOT / "cyclegan"


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, name: str, modules: set[str]) -> list[tuple[str, str, int]]:
    """(imported module, imported name or '', line) for every import in the file, at any depth (imports
    inside functions count: they still make one module depend on another)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, "", node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                source = f"{base}.{node.module}" if node.module else base
            else:
                source = node.module or ""
            for alias in node.names:
                as_module = f"{source}.{alias.name}"
                if as_module in modules:  # ``from . import storage``: the module itself
                    found.append((as_module, "", node.lineno))
                else:
                    found.append((source, alias.name, node.lineno))
    return found


def import_problems(root: Path) -> list[str]:
    """What breaks the layering of the package at ``root``: import cycles, the core importing the Ray
    layer (``<root>/distributed``) or Ray, and imports of another module's underscore names. The CLI
    (``<root>/cli.py``) is the top of the stack: it may import every layer."""
    files = {module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    modules = set(files)
    top = root.name
    layer = f"{top}.distributed"
    graph: dict[str, set[str]] = {m: set() for m in modules}
    problems = []
    for name, path in files.items():
        core = not (name == layer or name.startswith(layer + ".")) and name != f"{top}.cli"
        for source, imported, line in imports_of(path, name, modules):
            where = f"{path.relative_to(root.parent)}:{line}"
            target = source if source in modules else None
            if target is None and source.startswith(top + "."):
                target = max((m for m in modules if source.startswith(m + ".")), key=len, default=None)
            if target and target != name:
                graph[name].add(target)
            if core and (source == layer or source.startswith(layer + ".")):
                problems.append(f"{where}: the core module {name} imports the Ray layer ({source})")
            if core and (source == "ray" or source.startswith("ray.")):
                problems.append(f"{where}: the core module {name} imports Ray ({source})")
            private = imported.startswith("_") and not imported.startswith("__")
            if target and (private or any(part.startswith("_") and not part.startswith("__")
                                          for part in source.split("."))):
                problems.append(f"{where}: {name} imports a private name {source}.{imported or ''}".rstrip("."))
    problems += [f"import cycle: {' -> '.join(cycle)}" for cycle in cycles(graph)]
    return list(dict.fromkeys(problems))  # one line per problem, in file order


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each strongly connected group of modules (Tarjan), as a path back to its start."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(group)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    out = []
    for group in groups:
        start = min(group)
        path, seen = [start], {start}
        while True:  # walk inside the group until a module repeats
            nxt = min(n for n in graph[path[-1]] if n in group)
            if nxt in seen:
                out.append(path[path.index(nxt):] + [nxt])
                break
            path.append(nxt)
            seen.add(nxt)
    return out


def test_imports_go_one_way_without_cycles_or_private_names():
    problems = import_problems(PACKAGE)
    assert not problems, "\n".join(problems)


def test_the_import_check_finds_each_kind_of_problem(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "distributed").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "distributed" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .b import helper\n\ndef f():\n    from .distributed.run import go\n")
    (pkg / "b.py").write_text("def helper():\n    from .a import f\n")
    (pkg / "c.py").write_text("from .b import _secret\nimport ray\n")
    (pkg / "distributed" / "run.py").write_text("import ray\nfrom .. import a\n")
    problems = "\n".join(import_problems(pkg))
    assert "import cycle: pkg.a -> pkg.b -> pkg.a" in problems
    assert "pkg/a.py:4: the core module pkg.a imports the Ray layer (pkg.distributed.run)" in problems
    assert "pkg/c.py:1: pkg.c imports a private name pkg.b._secret" in problems
    assert "pkg/c.py:2: the core module pkg.c imports Ray (ray)" in problems
    assert "pkg/distributed/run.py" not in problems  # the Ray layer may import Ray and the core


def test_ruff_finds_nothing():
    ruff = Path(sys.executable).parent / "ruff"
    command = str(ruff) if ruff.exists() else shutil.which("ruff")
    if command is None:
        pytest.fail("ruff is not installed (it is in the project's test extras: pip install -e '.[test]')")
    done = subprocess.run([command, "check", "cyclegan", "tests"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
