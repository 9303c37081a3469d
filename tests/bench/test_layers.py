"""The architecture, checked: imports go down the layers (entry points ->
orchestrate -> execute -> measure -> record; analyze -> record), never up, with no
cycles, and every module and function stays small enough to read. The import
graph is read from the source (imports inside functions included), so a cycle
cannot hide in a function body."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("bench", "strategies", "mnist_core")
ENTRY_POINTS = {"bench.run", "bench.cell", "bench.report", "bench.compare", "bench.history",
                "bench.scale"}
BOTTOM = {"bench.record", "bench.metrics", "bench.matrix"}
# What each layer may import from bench (other packages: strategies and mnist_core,
# which never import bench, are open to the layers that train).
MAY_IMPORT = {
    "entry": {"entry", "orchestrate", "execute", "measure", "analyze", "bottom"},
    "orchestrate": {"orchestrate", "execute", "measure", "bottom"},
    "execute": {"execute", "measure", "bottom"},
    "measure": {"measure", "bottom"},
    "analyze": {"analyze", "bottom"},
    "bottom": {"bottom"},
}
MAX_MODULE_LINES = 320
MAX_FUNCTION_LINES = 60


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for package in PACKAGES for p in (REPO / package).rglob("*.py")}


def imports_of(path: Path, known: set[str]) -> set[str]:
    """Every project module ``path`` imports, wherever the import statement is."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        found |= {name for name in names if name in known and name not in PACKAGES}
    return found


def layer(module: str) -> str:
    if module in ENTRY_POINTS:
        return "entry"
    if module in BOTTOM:
        return "bottom"
    return module.split(".")[1]


GRAPH = {name: imports_of(path, set(modules())) - {name} for name, path in modules().items()}


@pytest.mark.parametrize("module", sorted(m for m in GRAPH if m.startswith("bench.")
                                          and m != "bench"))
def test_bench_imports_go_down_the_layers(module: str) -> None:
    allowed = MAY_IMPORT[layer(module)]
    upward = sorted(target for target in GRAPH[module]
                    if target.startswith("bench.") and layer(target) not in allowed)
    assert not upward, f"{module} ({layer(module)}) imports {upward}"


def test_strategies_and_the_workload_never_import_the_harness() -> None:
    for module, targets in GRAPH.items():
        if module.startswith(("strategies", "mnist_core")):
            assert not {t for t in targets if t.startswith("bench")}, module
        if module.startswith("mnist_core"):
            assert not {t for t in targets if t.startswith("strategies")}, module


def test_no_import_cycles() -> None:
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            cycle = path[path.index(module):] + [module]
            pytest.fail("import cycle: " + " -> ".join(cycle))
        if module in done:
            return
        for target in sorted(GRAPH.get(module, ())):
            if target in GRAPH and target != module and not module.startswith(target + "."):
                visit(target, [*path, module])
        done.add(module)

    for module in sorted(GRAPH):
        visit(module, [])


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_modules_and_functions_stay_readable(module: str) -> None:
    source = modules()[module].read_text()
    assert len(source.splitlines()) <= MAX_MODULE_LINES, module
    long = [f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, f"{module}: {long}"


def test_the_orchestrator_does_not_import_lightning(data_dir: Path) -> None:
    """The parent process imports torch (to see the GPUs) but not Lightning: that is
    paid by each cell's own process (or once, by the preload server), neither on import
    nor in what it does before the first cell: detect the machine, check MNIST."""
    code = ("import sys, bench.run, bench.orchestrate.local, bench.report, bench.compare; "
            "from strategies.registry import Machine; Machine.detect(); "
            "from bench.orchestrate.preflight import mnist_problem_of_orchestrator as check; "
            "assert check(None) is None; "
            "print(sorted(m for m in ('lightning', 'torchvision', 'deepspeed') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         check=True, env=os.environ | {"MNIST_DATA_DIR": str(data_dir)})
    assert out.stdout.strip() == "[]", out.stdout
