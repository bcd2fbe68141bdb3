"""What may import what (docs/architecture.md): detection and settings at the bottom, then core
and models, then engines and the scheduler, then the HTTP server and the CLI on top. Imports
inside functions count too: a lazy import is still a dependency."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "rkollama"
FORBIDDEN = {
    "rkollama.platform": ("rkollama.backends", "rkollama.doctor", "rkollama.server", "rkollama.cli",
                          "rkollama.scheduler", "rkollama.models", "rkollama.core"),
    "rkollama.board": ("rkollama.backends", "rkollama.server", "rkollama.cli", "rkollama.scheduler"),
    "rkollama.cpu_cores": ("rkollama.backends", "rkollama.server", "rkollama.cli", "rkollama.scheduler",
                           "rkollama.models", "rkollama.core", "rkollama.config"),
    "rkollama.config": ("rkollama.backends", "rkollama.server", "rkollama.cli", "rkollama.scheduler",
                        "rkollama.models", "rkollama.core"),
    # Core is the request's own layer: it knows no store (ModelFacts is the Protocol it reads).
    "rkollama.core": ("rkollama.server", "rkollama.cli", "rkollama.backends", "rkollama.scheduler",
                      "rkollama.doctor", "rkollama.models"),
    "rkollama.models": ("rkollama.server", "rkollama.cli", "rkollama.backends", "rkollama.scheduler",
                        "rkollama.doctor"),
    "rkollama.backends": ("rkollama.server", "rkollama.cli", "rkollama.doctor", "rkollama.scheduler"),
    "rkollama.scheduler": ("rkollama.server", "rkollama.cli", "rkollama.doctor"),
    "rkollama.server": ("rkollama.cli",),
    # The CLI is a client: it speaks HTTP to a daemon. What only this machine's files can do
    # (a pull with no daemon, importing Ollama's store) goes through rkollama.server.offline.
    "rkollama.cli": ("rkollama.models", "rkollama.backends", "rkollama.scheduler"),
    # The dialects' translators sit under the routes: they know requests and core events only.
    "rkollama.api": ("rkollama.server", "rkollama.cli", "rkollama.scheduler", "rkollama.backends"),
    "rkollama.openai": ("rkollama.server", "rkollama.cli", "rkollama.scheduler", "rkollama.backends"),
    "rkollama.anthropic": ("rkollama.server", "rkollama.cli", "rkollama.scheduler", "rkollama.backends"),
    # The CLI's client starts fast: the standard library and the wire types, nothing of the daemon.
    "rkollama.client": ("rkollama.server", "rkollama.scheduler", "rkollama.backends", "rkollama.models",
                        "rkollama.core", "rkollama.cli", "rkollama.api.convert", "rkollama.api.fields"),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in found if name.startswith("rkollama")}


def test_no_module_imports_a_layer_above_it():
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        name = module_name(path)
        for layer, banned in FORBIDDEN.items():
            if name == layer or name.startswith(layer + "."):
                for imported in imports(path):
                    if any(imported == b or imported.startswith(b + ".") for b in banned):
                        problems.append(f"{name} imports {imported}")
    assert problems == []


def test_no_module_passes_600_lines():
    long = {module_name(p): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > 600}
    assert long == {}


def test_no_import_cycles_not_even_type_only_ones():
    """No circle of imports among the package's modules, counting imports under TYPE_CHECKING
    and inside functions (a type-only cycle is still a tangle a reader must hold in mind). A
    module importing a sibling through its package (`from rkollama.cli import common`) is not
    an edge to the package's __init__."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    packages = {module_name(p) for p in PACKAGE.rglob("__init__.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges = set()
        for imported in imports(path):
            parts = imported.split(".")
            target = next((".".join(parts[:i]) for i in range(len(parts), 0, -1)
                           if ".".join(parts[:i]) in modules), None)
            if target is None or target == name:
                continue
            if target in packages and name.startswith(target + "."):
                continue
            edges.add(target)
        graph[name] = edges
    cycles, seen = [], set()
    for start in graph:  # a depth-first walk from each module, reporting each circle found
        path, stack = [start], [iter(sorted(graph[start]))]
        while stack:
            step = next(stack[-1], None)
            if step is None:
                stack.pop()
                path.pop()
                continue
            if step == start:
                circle = tuple(sorted(path))
                if circle not in seen:
                    seen.add(circle)
                    cycles.append(" -> ".join(path + [start]))
            elif step not in path and step > start:  # each circle once, from its smallest module
                path.append(step)
                stack.append(iter(sorted(graph[step])))
    assert cycles == []
