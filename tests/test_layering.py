"""The house has no import cycle and no upward import (DESIGN.md "Layout", issue 12 part 5).

Every module under ``src/ebmlab`` is parsed with ``ast`` (nothing is imported): every ``import`` and
``from ... import`` anywhere in the file counts, also those inside functions (a lazy import is still a
dependency), and ``from ebmlab.x import y`` is an edge to ``ebmlab.x.y`` when ``y`` is a submodule,
else to ``ebmlab.x``. Two checks on that module graph:

- no cycle between modules;
- no upward edge against the layer order (``LAYERS``): a module may import modules of its own layer
  or below. ``data``, ``schedules``, ``metrics``, ``plots``, ``files`` and ``progress_lines`` are leaves: anyone above ``errors`` may
  import them, they import only ``ebmlab.errors`` and their own package (``plots`` only ``errors``), and ``files``
  (atomic writes, standard library alone: every module that writes a file should use it, not its own temp + rename).

``ebmlab/__init__.py`` is a facade (``ebmlab.load`` imports ``training`` lazily) and is exempt;
``__main__`` sits on top of ``cli``.
"""
from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PKG = "ebmlab"

# first component below ``ebmlab`` -> layer; a module may import its own layer or lower ones
LAYERS = {
    "errors": 0,
    "config": 1, "config_checks": 1, "config_files": 1, "config_hash": 1,
    "energies": 2,
    "samplers": 3, "buffers": 3, "buffers_time": 3,
    "objectives": 4,
    "applications": 5, "training": 5,
    "experiments": 6, "api": 6, "api_energy": 6, "api_data": 6, "api_config": 6, "api_catalog": 6,
    "cli": 7, "cli_commands": 7,
    "__main__": 8,
}
LEAVES = {"data", "schedules", "metrics", "plots", "files", "progress_lines", "devices"}  # importable from layer 1 up; import only errors + own package
LEAF_LAYER = 0.5
FACADE = PKG  # ebmlab/__init__.py: may import anything (lazily); not checked

# Edges that exist today and are removed by the contract work of issue 12: energies.time keeps a lazy
# ``build_joint_energy`` alias (module ``__getattr__``) for objectives/joint_time.py, which still
# imports it from there; once it imports it from energies.build, delete the alias and this entry.
# Nothing else may be added here: fix the import.
KNOWN_PENDING: set[tuple[str, str]] = set()  # edges tolerated while a refactor is under way (none now)


def module_files() -> dict[str, Path]:
    """{dotted module name: file} for every .py under src/ebmlab (a package is its __init__.py)."""
    out = {}
    for path in sorted((SRC / PKG).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _resolve_from(node: ast.ImportFrom, module: str, is_package: bool) -> str | None:
    if node.level == 0:
        return node.module
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(module: str, path: Path, modules: set[str]) -> set[str]:
    """The ebmlab modules that ``module`` imports anywhere in its file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = _resolve_from(node, module, is_package)
            if target is None:
                continue
            names = [f"{target}.{a.name}" if f"{target}.{a.name}" in modules else target for a in node.names]
        else:
            continue
        for name in names:
            if name == PKG or name.startswith(PKG + "."):
                while name not in modules and "." in name:  # `import ebmlab.x.y.attr` style: the module part
                    name = name.rsplit(".", 1)[0]
                if name != module:
                    found.add(name)
    return found


def import_graph() -> dict[str, set[str]]:
    files = module_files()
    names = set(files)
    return {m: imports_of(m, p, names) for m, p in files.items()}


def _part(module: str) -> str:
    return module.split(".")[1] if "." in module else ""


def upward_edges(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for src, dsts in graph.items():
        if src == FACADE:
            continue
        s = _part(src)
        if s not in LAYERS and s not in LEAVES:
            bad.append(f"{src}: its package {s!r} has no layer in tests/test_layering.py (add it to LAYERS or LEAVES)")
            continue
        for dst in sorted(dsts):
            if (src, dst) in KNOWN_PENDING or dst == FACADE:
                continue
            d = _part(dst)
            if s in LEAVES:
                allowed = d in ("errors", "files") or (d == s and s != "plots")
                if not allowed:
                    bad.append(f"{src} -> {dst}: leaf {s!r} may import only ebmlab.errors, ebmlab.files and its own "
                               "package")
                continue
            level_s, level_d = LAYERS[s], (LEAF_LAYER if d in LEAVES else LAYERS.get(d, 99))
            if level_d > level_s:
                bad.append(f"{src} (layer {level_s}) -> {dst} (layer {level_d}): upward import")
    return bad


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (as a path) per strongly connected component with more than one module (Tarjan)."""
    edges = {m: {d for d in ds if (m, d) not in KNOWN_PENDING and d in graph} for m, ds in graph.items()}
    index, low, stack, on_stack, comps, counter = {}, {}, [], set(), [], [0]

    def visit(v):  # recursion depth is bounded by the number of modules (~100)
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(comp)

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return [_cycle_in(sorted(c), edges) for c in comps]


def _cycle_in(comp: list[str], edges: dict[str, set[str]]) -> list[str]:
    """A path start -> ... -> start inside one strongly connected component (breadth-first)."""
    members, start = set(comp), comp[0]
    prev, queue = {start: None}, [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(edges[v] & members):
            if w == start:
                path = [v]
                while prev[path[-1]] is not None:
                    path.append(prev[path[-1]])
                return list(reversed(path)) + [start]
            if w not in prev:
                prev[w] = v
                queue.append(w)
    return comp


def test_no_import_cycle():
    found = cycles(import_graph())
    assert not found, "import cycles:\n" + "\n".join(" -> ".join(c) for c in found)


def test_no_upward_import():
    bad = upward_edges(import_graph())
    assert not bad, "imports against the layer order (DESIGN.md):\n" + "\n".join(bad)


def test_the_checks_see_a_cycle_and_an_upward_edge():
    """The checker itself: a planted cycle and a planted upward edge are reported."""
    graph = {"ebmlab.energies.a": {"ebmlab.energies.b"}, "ebmlab.energies.b": {"ebmlab.energies.a"},
             "ebmlab.metrics.m": {"ebmlab.plots"}, "ebmlab.plots": set(),
             "ebmlab.config": {"ebmlab.training.loop"}, "ebmlab.training.loop": set()}
    assert cycles(graph) == [["ebmlab.energies.a", "ebmlab.energies.b", "ebmlab.energies.a"]]
    bad = upward_edges(graph)
    assert any("ebmlab.config (layer 1) -> ebmlab.training.loop" in b for b in bad)
    assert any("ebmlab.metrics.m -> ebmlab.plots" in b for b in bad)
