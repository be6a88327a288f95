"""The package layering a reader can see, enforced: no package imports one above it, no import
cycles between modules, and nothing outside ``tests/`` imports from ``tests/``.

Read from the source with ``ast`` (every import, including those inside functions), so a
lazy import cannot hide an upward dependency.  docs/architecture.md explains the layers.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# package -> the project packages it may import.  Anything not listed is forbidden.
ALLOWED: dict[str, set[str]] = {
    "router_lib": set(),  # pure: policy, planner, simulator, metrics arithmetic, domain values
    "model_repository": {"router_lib"},
    "locustfiles": set(),
    "tracing": set(),  # OpenTelemetry: settings, local OTLP receiver, traces read back, waterfalls
    "localnet": set(),  # loopback port picking; SIGTERM/SIGHUP handled like Ctrl-C by programs that start processes
    "xds_server": {"router_lib", "tracing", "localnet"},  # Envoy and ADS only
    "fleet": {"router_lib", "model_repository", "tracing", "localnet"},  # local processes only
    "reporting": {"router_lib", "locustfiles"},
    "control": {"router_lib", "xds_server", "fleet", "model_repository", "tracing"},  # the loop and its adapters
    "profiler": {"localnet", "router_lib", "model_repository", "fleet", "reporting"},
    "local_platform": {"localnet", "router_lib", "model_repository", "locustfiles", "xds_server", "fleet", "reporting",
                       "control", "tracing"},
    "dashboards": {"router_lib"},
    "alerts": {"router_lib"},
    "deploy": {"router_lib", "model_repository"},
    "releases": {"router_lib", "model_repository", "xds_server", "fleet", "control", "profiler", "reporting",
                 "locustfiles"},  # canary/shadow releases (issue 14): spec, CLI, comparator, demo
    "batch": {"router_lib", "model_repository", "locustfiles", "xds_server", "fleet", "control", "reporting"},
    "benchmarks": {"localnet", "router_lib", "model_repository", "locustfiles", "xds_server", "fleet", "reporting", "control",
                   "profiler", "local_platform", "releases", "batch", "tracing"},
}
# Modules of ``control`` that must stay pure (decisions and the persisted record): router_lib only.
PURE_CONTROL_MODULES = {"control.decide", "control.record"}


def _packages() -> list[str]:
    return sorted(p.name for p in ROOT.iterdir() if (p / "__init__.py").exists())


def _modules() -> dict[str, Path]:
    out = {}
    for package in _packages():
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imports(path: Path, module: str) -> set[str]:
    """Absolute names of every project module ``path`` imports (relative imports resolved)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names)
    return names


MODULES = _modules()
PACKAGES = _packages()
IMPORTS = {m: {n for n in _imports(p, m) if n.split(".")[0] in PACKAGES} for m, p in MODULES.items()}


def test_every_package_has_a_layer():
    assert set(PACKAGES) - {"tests"} == set(ALLOWED), "add the new package to ALLOWED (and to docs/architecture.md)"


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_no_package_imports_one_above_it(package):
    wrong = sorted(f"{m} imports {n}" for m, names in IMPORTS.items() if m.split(".")[0] == package
                   for n in names if n.split(".")[0] not in ALLOWED[package] | {package})
    assert not wrong, "\n".join(wrong)


def test_the_pure_control_modules_import_only_router_lib():
    wrong = sorted(f"{m} imports {n}" for m in PURE_CONTROL_MODULES for n in IMPORTS[m]
                   if n.split(".")[0] != "router_lib" and not any(n == p or n.startswith(p + ".")
                                                                  for p in PURE_CONTROL_MODULES))
    assert not wrong, "\n".join(wrong)


def test_nothing_outside_tests_imports_tests():
    wrong = sorted(f"{m} imports {n}" for m, names in IMPORTS.items() if not m.startswith("tests")
                   for n in names if n.split(".")[0] == "tests")
    assert not wrong, "\n".join(wrong)


def _cycles(graph: dict[str, set[str]]) -> list[str]:
    cycles: list[str] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return cycles


def test_there_are_no_import_cycles_between_modules():
    graph: dict[str, set[str]] = defaultdict(set)
    for m, names in IMPORTS.items():
        for n in names:
            target = n if n in MODULES else n.rsplit(".", 1)[0]  # `from pkg.mod import name`
            if target in MODULES and target != m and MODULES[target].name != "__init__.py":
                graph[m].add(target)
    cycles = _cycles(graph)
    assert not cycles, "\n".join(cycles)


def test_the_cycle_finder_reports_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a -> b -> c -> a"]


def test_the_rules_catch_an_upward_import(tmp_path):
    """The checker itself: an xds_server module importing fleet is reported."""
    bad = tmp_path / "bad.py"
    bad.write_text("from fleet.runtime import read_runtime\n")
    names = {n for n in _imports(bad, "xds_server.bad") if n.split(".")[0] in PACKAGES}
    assert any(n.split(".")[0] not in ALLOWED["xds_server"] | {"xds_server"} for n in names)
