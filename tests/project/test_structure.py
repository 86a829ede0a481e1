"""The shape of the code: three layers by folder, imports one way (core <- distributed <- commands <- cli.py),
Ray only in distributed/, no module reaching into another's private names, each layer's tests using no
higher layer but for a listed reason, and ruff (pyflakes and import order) passing."""
from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
PACKAGE = ROOT / "cyclegan"
TESTS = ROOT / "tests"


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


LAYERS = ("core", "distributed", "commands")  # bottom to top; cli.py above them all
MAY_IMPORT = {"core": {"core"}, "distributed": {"core", "distributed"},
              "commands": {"core", "distributed", "commands"}, "cli": set(LAYERS), "package": set()}
RAY_ONLY = ("ray", "optuna")  # imported by the Ray layer alone
NOT_IN_CORE = ("argparse",)  # the core takes options as a Config, never from a command line


def layer_of(name: str, top: str) -> str:
    parts = name.split(".")
    if len(parts) == 1:
        return "package"
    if parts[1:] == ["cli"]:
        return "cli"
    return parts[1] if parts[1] in LAYERS else "outside"


def import_problems(root: Path) -> list[str]:
    """What breaks the layering of the package at ``root``, by folder: ``core/`` imports neither other
    layer, ``distributed/`` the core only, ``commands/`` both (and nothing but ``cli.py`` imports
    ``commands/``); only ``distributed/`` imports Ray or Optuna; the core never parses a command line; no
    module outside the three folders but ``cli.py``; no import cycles; no imports of another module's
    underscore names."""
    files = {module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    modules = set(files)
    top = root.name
    graph: dict[str, set[str]] = {m: set() for m in modules}
    problems = []
    for name, path in files.items():
        layer = layer_of(name, top)
        if layer == "outside":
            problems.append(f"{path.relative_to(root.parent)}: {name} is in none of the layers "
                            f"({', '.join(f'{top}/{x}/' for x in LAYERS)}, {top}/cli.py)")
            continue
        for source, imported, line in imports_of(path, name, modules):
            where = f"{path.relative_to(root.parent)}:{line}"
            target = source if source in modules else None
            if target is None and source.startswith(top + "."):
                target = max((m for m in modules if source.startswith(m + ".")), key=len, default=None)
            if target and target != name:
                graph[name].add(target)
            target_layer = layer_of(target, top) if target else None
            if target_layer in LAYERS and target_layer not in MAY_IMPORT[layer] | {layer}:
                problems.append(f"{where}: {name} ({layer}) imports {source} ({target_layer}): "
                                f"the {layer} layer may import {', '.join(sorted(MAY_IMPORT[layer])) or 'nothing'}")
            root_module = source.split(".")[0]
            if root_module in RAY_ONLY and layer != "distributed":
                problems.append(f"{where}: {name} imports {root_module} ({source}); only {top}/distributed/ may")
            if root_module in NOT_IN_CORE and layer == "core":
                problems.append(f"{where}: the core module {name} imports {source}; command lines are parsed "
                                f"in {top}/commands/")
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


MAX_MODULE_LINES, MAX_FUNCTION_LINES = 400, 60  # past these, a module or function is doing two jobs


def size_problems(package: Path) -> list[str]:
    """Each module of ``package`` over MAX_MODULE_LINES lines and each function over MAX_FUNCTION_LINES."""
    problems = []
    for path in sorted(package.rglob("*.py")):
        source = path.read_text()
        name = path.relative_to(package.parent).as_posix()
        if len(source.splitlines()) > MAX_MODULE_LINES:
            problems.append(f"{name}: {len(source.splitlines())} lines (at most {MAX_MODULE_LINES})")
        for node in ast.walk(ast.parse(source, name)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    problems.append(f"{name}:{node.lineno}: {node.name} is {length} lines (at most "
                                    f"{MAX_FUNCTION_LINES})")
    return problems


def test_no_module_or_function_is_over_its_size():
    problems = size_problems(PACKAGE)
    assert not problems, "\n".join(problems)


def test_the_size_check_finds_a_long_module_and_a_long_function(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "long.py").write_text("x = 1\n" * (MAX_MODULE_LINES + 1))
    (tmp_path / "pkg" / "fn.py").write_text("def f():\n" + "    pass\n" * MAX_FUNCTION_LINES)
    (tmp_path / "pkg" / "ok.py").write_text("def g():\n" + "    pass\n" * (MAX_FUNCTION_LINES - 1))
    assert size_problems(tmp_path / "pkg") == [f"pkg/fn.py:1: f is {MAX_FUNCTION_LINES + 1} lines (at most 60)",
                                               f"pkg/long.py: {MAX_MODULE_LINES + 1} lines (at most 400)"]


def test_imports_go_one_way_without_cycles_or_private_names():
    problems = import_problems(PACKAGE)
    assert not problems, "\n".join(problems)


def test_the_import_check_finds_each_kind_of_problem(tmp_path):
    pkg = tmp_path / "pkg"
    for folder in ("core", "distributed", "commands"):
        (pkg / folder).mkdir(parents=True)
        (pkg / folder / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "cli.py").write_text("from .commands import train\nfrom .distributed import run\nfrom .core import a\n")
    (pkg / "core" / "a.py").write_text("from .b import helper\n\ndef f():\n    from ..distributed.run import go\n")
    (pkg / "core" / "b.py").write_text("def helper():\n    from .a import f\n")
    (pkg / "core" / "c.py").write_text("from .b import _secret\nimport ray\nimport argparse\n")
    (pkg / "core" / "d.py").write_text("from ..commands.train import run\n")
    (pkg / "distributed" / "run.py").write_text("import ray\nimport optuna\nfrom ..core import a\n")
    (pkg / "distributed" / "up.py").write_text("from ..commands import train\n")
    (pkg / "commands" / "train.py").write_text("from ..core import a\nfrom ..distributed import run\n")
    (pkg / "commands" / "bench.py").write_text("from ray import tune\n")
    (pkg / "stray.py").write_text("")
    problems = "\n".join(import_problems(pkg))
    assert "import cycle: pkg.core.a -> pkg.core.b -> pkg.core.a" in problems
    assert ("pkg/core/a.py:4: pkg.core.a (core) imports pkg.distributed.run (distributed): the core layer may "
            "import core") in problems
    assert "pkg/core/c.py:1: pkg.core.c imports a private name pkg.core.b._secret" in problems
    assert "pkg/core/c.py:2: pkg.core.c imports ray (ray); only pkg/distributed/ may" in problems
    assert "pkg/core/c.py:3: the core module pkg.core.c imports argparse" in problems
    assert "pkg/core/d.py:1: pkg.core.d (core) imports pkg.commands.train (commands)" in problems
    assert "pkg/distributed/up.py:1: pkg.distributed.up (distributed) imports pkg.commands.train (commands)" in problems
    assert "pkg/commands/bench.py:1: pkg.commands.bench imports ray (ray); only pkg/distributed/ may" in problems
    assert "pkg/stray.py: pkg.stray is in none of the layers" in problems
    # What is allowed: the Ray layer imports Ray, Optuna and the core; commands import both layers; cli all.
    assert "pkg/distributed/run.py:" not in problems
    assert "pkg/commands/train.py:" not in problems
    assert "pkg/cli.py:" not in problems


# ---------------------------------------------------------------- the tests' layers
# tests/core/ tests the core alone, tests/distributed/ the Ray layer on the core; tests/commands/ and
# tests/project/ may use everything. A module run as ``python -m cyclegan....`` counts as imported.
TEST_MAY_USE = {"core": {"core"}, "distributed": {"core", "distributed"}}
DRIVER = "the scenario is a driver process as a user starts one (the CLI), beside the Ray it joins"
REPORT = "the sweep's scenario ends in the report a user reads of it"
# (test file, module it uses from a higher layer): why it may. An entry nothing matches any more is an error.
TESTS_MAY_USE_HIGHER = {
    ("tests/distributed/test_distributed.py", "cyclegan.cli"): DRIVER,
    ("tests/distributed/test_multinode.py", "cyclegan.cli"): DRIVER,
    ("tests/distributed/cluster_scenarios.py", "cyclegan.cli"):
        "the preemption watcher is a process the cluster file starts on each node (cyclegan cluster ...)",
    ("tests/distributed/test_writers.py", "cyclegan.cli"): DRIVER,
    ("tests/distributed/test_stored_files.py", "cyclegan.cli"): DRIVER,
    ("tests/distributed/test_stored_files.py", "cyclegan.commands.report"):
        "a bucket's planted experiment file must not steer the report's reading of it",
    ("tests/distributed/test_sweep.py", "cyclegan.cli"): REPORT + ", and a sweep resumed as a user resumes one",
    ("tests/distributed/test_sweep.py", "cyclegan.commands.report"): REPORT,
}


def used_modules(path: Path) -> list[tuple[str, int]]:
    """(module, line) for every import in a test file, at any depth, and every module it runs with ``-m``
    (a string naming a module of the package)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            found.append((node.module, node.lineno))
            if node.module == "cyclegan":  # from cyclegan import cli
                found += [(f"cyclegan.{alias.name}", node.lineno) for alias in node.names]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and \
                re.fullmatch(r"cyclegan(\.\w+)+", node.value):
            found.append((node.value, node.lineno))
    return found


def layer_of_used(module: str) -> str:
    """The package's layer a module belongs to (Ray and Optuna: the Ray layer's), else ''."""
    parts = module.split(".")
    if parts[0] in RAY_ONLY:
        return "distributed"
    if parts[0] != "cyclegan" or len(parts) == 1:
        return ""
    return "cli" if parts[1] == "cli" else parts[1] if parts[1] in LAYERS else ""


def higher_layer_uses(tests: Path, allowed: dict) -> list[str]:
    """Each use of a higher layer by a test below ``tests``/<layer>/ that ``allowed`` gives no reason for,
    and each entry of ``allowed`` that no test needs any more."""
    problems, used = [], set()
    for layer, may in TEST_MAY_USE.items():
        for path in sorted((tests / layer).rglob("*.py")):
            name = path.relative_to(tests.parent).as_posix()
            for module, line in used_modules(path):
                other = layer_of_used(module)
                if not other or other in may:
                    continue
                if (name, module) in allowed:
                    used.add((name, module))
                    continue
                problems.append(f"{name}:{line}: a test of the {layer} layer uses {module} ({other}): move it to "
                                f"tests/{other if other != 'cli' else 'commands'}/, or give the reason in "
                                f"TESTS_MAY_USE_HIGHER")
    problems += [f"TESTS_MAY_USE_HIGHER: {name} no longer uses {module}: drop the entry"
                 for name, module in sorted(set(allowed) - used)]
    return problems


def test_each_layers_tests_use_no_higher_layer_but_for_a_listed_reason():
    problems = higher_layer_uses(TESTS, TESTS_MAY_USE_HIGHER)
    assert not problems, "\n".join(problems)


def test_the_tests_layer_check_finds_each_kind_of_use(tmp_path):
    tests = tmp_path / "tests"
    for folder in ("core", "distributed", "commands"):
        (tests / folder).mkdir(parents=True)
    (tests / "core" / "test_a.py").write_text(
        "from cyclegan.core import config\nimport ray\n\ndef test():\n    from cyclegan.cli import main\n"
        "    run([sys.executable, '-m', 'cyclegan.commands.train'])\nfrom cyclegan import distributed\n")
    (tests / "distributed" / "test_b.py").write_text(
        "from cyclegan.distributed.streams import scan\nimport ray\nfrom cyclegan.commands.report import table\n"
        "from cyclegan.cli import main\n")
    (tests / "commands" / "test_c.py").write_text("from cyclegan.cli import main\nimport ray\n")
    allowed = {("tests/distributed/test_b.py", "cyclegan.cli"): "why", ("tests/core/test_gone.py", "ray"): "why"}
    problems = "\n".join(higher_layer_uses(tests, allowed))
    assert "tests/core/test_a.py:2: a test of the core layer uses ray (distributed): move it to tests/distributed/" \
        in problems
    assert "tests/core/test_a.py:5: a test of the core layer uses cyclegan.cli (cli): move it to tests/commands/" \
        in problems
    assert "tests/core/test_a.py:6: a test of the core layer uses cyclegan.commands.train (commands)" in problems
    assert "tests/core/test_a.py:7: a test of the core layer uses cyclegan.distributed (distributed)" in problems
    assert "tests/distributed/test_b.py:3: a test of the distributed layer uses cyclegan.commands.report" in problems
    assert "TESTS_MAY_USE_HIGHER: tests/core/test_gone.py no longer uses ray: drop the entry" in problems
    # What is allowed: a layer's own and lower modules, a listed reason, and anything in tests/commands/.
    assert "test_a.py:1:" not in problems and "test_b.py:1:" not in problems and "test_b.py:2:" not in problems
    assert "test_b.py:4:" not in problems and "test_c.py" not in problems


# The test files that may reach into Ray's private modules: each name there is checked at a Ray upgrade.
RAY_PRIVATE_USERS = {"tests/distributed/test_ray_internals.py", "tests/helpers/ray_autoscaler.py"}


def ray_private_uses(tests: Path) -> list[str]:
    """Each import of a private Ray module (a part of its name starting with _) outside RAY_PRIVATE_USERS."""
    problems = []
    for path in sorted(tests.rglob("*.py")):
        name = path.relative_to(tests.parent).as_posix()
        if name in RAY_PRIVATE_USERS:
            continue
        for module, line in used_modules(path):
            parts = module.split(".")
            if parts[0] == "ray" and any(part.startswith("_") for part in parts):
                problems.append(f"{name}:{line}: {module} is private to Ray: use cyclegan/distributed/"
                                f"ray_internals.py or tests/helpers/ray_autoscaler.py")
    return problems


def test_no_test_reads_rays_private_modules_but_the_internals_checks():
    problems = ray_private_uses(TESTS)
    assert not problems, "\n".join(problems)


def test_the_ray_private_check_finds_a_private_import_outside_the_internals_checks(tmp_path):
    tests = tmp_path / "tests"
    (tests / "distributed").mkdir(parents=True)
    (tests / "distributed" / "test_a.py").write_text(
        "import ray.util\nfrom ray.train.v2._internal.constants import x\n\ndef f():\n    import ray._raylet\n")
    (tests / "distributed" / "test_ray_internals.py").write_text("from ray._private import worker\n")
    assert ray_private_uses(tests) == [
        "tests/distributed/test_a.py:2: ray.train.v2._internal.constants is private to Ray: use "
        "cyclegan/distributed/ray_internals.py or tests/helpers/ray_autoscaler.py",
        "tests/distributed/test_a.py:5: ray._raylet is private to Ray: use cyclegan/distributed/ray_internals.py "
        "or tests/helpers/ray_autoscaler.py"]


def test_ruff_finds_nothing():
    ruff = Path(sys.executable).parent / "ruff"
    command = str(ruff) if ruff.exists() else shutil.which("ruff")
    if command is None:
        pytest.fail("ruff is not installed (it is in the project's test extras: pip install -e '.[test]')")
    done = subprocess.run([command, "check", "cyclegan", "tests"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_modules_ray_datas_tasks_run_never_import_torch():
    """Ray Data's tasks (the scan, the streams' loading) run in fresh worker processes: importing torch
    there cost seconds of every run's start and every restart. They decode, crop and flip in NumPy/PIL;
    the training worker makes the tensors."""
    code = ("import sys; import cyclegan.distributed.streams, cyclegan.distributed.ingest, cyclegan.core.data; "
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert done.stdout.strip() == "[]"
