"""The package's structure, as ARCHITECTURE.md draws it, checked from the source itself.

* Dependencies run one way: cli -> api -> flows -> {report, runs} -> stages -> base. Every import counts,
  at module level or inside a function (lazy imports are still dependencies), and under TYPE_CHECKING.
* No import cycle between modules.
* No stage reads a run directory: stages do not import the run store (``levit_edge.runs``).
* No module over 600 lines.
* report.json is built in one place: nothing outside ``report/build.py`` writes keys into a report.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "levit_edge"
MAX_LINES = 600

# (layer, module prefixes); a module belongs to the first entry whose prefix matches, most specific first
LAYERS: list[tuple[int, tuple[str, ...]]] = [
    (5, ("levit_edge.cli",)),
    (4, ("levit_edge.api",)),
    (3, ("levit_edge.flows", "levit_edge.inspect")),
    (2, ("levit_edge.report", "levit_edge.runs")),
    (
        1,
        (
            "levit_edge.data",
            "levit_edge.model",
            "levit_edge.export",
            "levit_edge.quant",
            "levit_edge.validate",
            "levit_edge.backends",
            "levit_edge.bench",
            "levit_edge.fixture",
            "levit_edge.board",
            "levit_edge.platforms",
        ),
    ),
    (
        0,
        (
            "levit_edge.errors",
            "levit_edge.io",
            "levit_edge.artifacts",
            "levit_edge.settings",
            "levit_edge.pausepoint",
            "levit_edge.paths",
        ),
    ),
]
LAYER_NAMES = {5: "cli", 4: "api", 3: "flows", 2: "report/runs", 1: "stages", 0: "base"}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def layer_of(module: str) -> int | None:
    for layer, prefixes in LAYERS:
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return layer
    return None  # levit_edge itself (__init__: version, environment defaults)


def package_of(module: str) -> str:
    """``levit_edge.report`` for ``levit_edge.report.build``; top-level modules are their own package."""
    parts = module.split(".")
    return ".".join(parts[:2])


def imports_of(module: str) -> set[str]:
    """Every levit_edge module ``module`` imports, anywhere in its source."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(), str(path))
    base = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                prefix = base.rsplit(".", node.level - 1)[0] if node.level > 1 else base
                target = f"{prefix}.{node.module}" if node.module else prefix
            else:
                target = node.module or ""
            # ``from levit_edge.report import build`` imports the module levit_edge.report.build
            names = [f"{target}.{a.name}" if f"{target}.{a.name}" in MODULES else target for a in node.names]
        else:
            continue
        for name in names:
            while name and name not in MODULES:
                name = name.rpartition(".")[0]
            if name.startswith("levit_edge") and name != module:
                found.add(name)
    return found


GRAPH = {m: imports_of(m) for m in MODULES}


def unresolved_imports(path: Path) -> list[str]:
    """The levit_edge modules ``path`` imports (anywhere in it) that do not exist."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if (
            isinstance(node, ast.ImportFrom)
            and node.level == 0
            and (node.module or "").startswith("levit_edge")
        ):
            if node.module not in MODULES:
                out.append(f"{path.relative_to(ROOT.parent)}:{node.lineno}: no module {node.module}")
        elif isinstance(node, ast.Import):
            out.extend(
                f"{path.relative_to(ROOT.parent)}:{node.lineno}: no module {a.name}"
                for a in node.names
                if a.name.startswith("levit_edge") and a.name not in MODULES
            )
    return out


def test_every_import_names_a_module_that_exists() -> None:
    """A lazy import of a module that moved fails only when its function runs: catch it here."""
    scripts = [*ROOT.parent.glob("benchmarks/*.py"), *ROOT.parent.glob("tools/*.py")]
    missing = [line for path in [*MODULES.values(), *scripts] for line in unresolved_imports(path)]
    assert not missing, "\n".join(missing)


def test_every_module_has_a_layer() -> None:
    unplaced = [m for m in MODULES if layer_of(m) is None and m != "levit_edge"]
    assert not unplaced, f"modules outside every layer of ARCHITECTURE.md: {unplaced}"


def test_dependencies_run_one_way() -> None:
    wrong = []
    for module, targets in GRAPH.items():
        own = layer_of(module)
        for target in targets:
            theirs = layer_of(target)
            if own is None or theirs is None:
                continue
            upward = theirs > own
            # report and runs are one layer but independent of each other
            sideways = own == theirs == 2 and package_of(module) != package_of(target)
            if upward or sideways:
                wrong.append(f"{module} ({LAYER_NAMES[own]}) imports {target} ({LAYER_NAMES[theirs]})")
    assert not wrong, "\n".join(wrong)


def test_the_package_root_imports_nothing_of_its_own() -> None:
    assert GRAPH["levit_edge"] == set()


def test_no_import_cycles() -> None:
    """Tarjan's strongly connected components over every import (module level and in functions)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(GRAPH[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_the_checker_sees_lazy_imports() -> None:
    """The graph includes imports inside functions (a check that missed them would pass vacuously)."""
    assert "levit_edge.flows.export" in GRAPH["levit_edge.api"]  # api imports flows inside its functions


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_over_600_lines(module: str) -> None:
    lines = len(MODULES[module].read_text().splitlines())
    assert lines <= MAX_LINES, f"{MODULES[module].relative_to(ROOT.parent)} has {lines} lines"


REPORT_WRITE = re.compile(r"\breport\[[^\]]+\]\s*=|\breport\.(update|setdefault|pop|clear)\(")


def test_report_keys_are_written_by_report_build_only() -> None:
    writers = [
        f"{path.relative_to(ROOT.parent)}:{i}: {line.strip()}"
        for module, path in MODULES.items()
        if module != "levit_edge.report.build"
        for i, line in enumerate(path.read_text().splitlines(), 1)
        if REPORT_WRITE.search(line)
    ]
    assert not writers, "report.json keys written outside report/build.py:\n" + "\n".join(writers)
