"""The import graph: data flows one way (corpus -> audio -> kernels -> features -> ... -> cli).

Read with ``ast`` (nothing is imported): every ``import sononet...`` anywhere in a module, in
functions and under ``if TYPE_CHECKING:`` too, is an edge (a type-only import still ties the two
modules together for the reader and the type checker). A module may import its own layer or a
lower one, never a higher one, and no set of modules may import each other in a cycle. Every
module is listed in ``LAYERS``: a new top-level module must say where it sits.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Lower layers know nothing of higher ones. The first matching prefix wins. `jobs` is low: it names
# the configs it maps TOML onto by "module:attr" strings and imports them only when asked.
LAYERS = [
    ("sononet.errors", 0), ("sononet.io", 0), ("sononet.device", 0), ("sononet.locking", 0), ("sononet.version", 0),
    ("sononet.openmp", 0), ("sononet.stopping", 0), ("sononet.sources", 0), ("sononet.perturb", 1),
    ("sononet.kernels", 0), ("sononet.jobs", 0), ("sononet.corpus", 1), ("sononet.audio", 1), ("sononet.audio_av", 1),
    ("sononet.features", 2), ("sononet.prepare", 3), ("sononet.models", 3), ("sononet.train", 4),
    ("sononet.runinfo", 4), ("sononet.evaluate", 5), ("sononet.experiment", 6), ("sononet.training", 6),
    ("sononet.evaluation", 6), ("sononet.final_model", 6), ("sononet.label", 6), ("sononet.robustness", 6),
    ("sononet.api", 7), ("sononet.export", 7), ("sononet.nested", 7), ("sononet.bench", 8),
    ("sononet.batch", 8), ("sononet.cli", 9), ("sononet.__main__", 9), ("sononet", 0),
]  # fmt: skip


def layer(module: str) -> int:
    """The first matching entry; the bare ``sononet`` entry is the package's own __init__ only."""
    for prefix, n in LAYERS:
        if module == prefix or (prefix != "sononet" and module.startswith(prefix + ".")):
            return n
    raise AssertionError(f"{module} is in no layer; add it to LAYERS in {Path(__file__).name}")


def modules() -> dict[str, Path]:
    found = {}
    for base, package in ((ROOT / "sononet", "sononet"), (ROOT / "kernels", "sononet.kernels")):
        for path in base.rglob("*.py"):
            name = ".".join([package, *path.relative_to(base).with_suffix("").parts])
            found[name.removesuffix(".__init__")] = path
    return found


class _Imports(ast.NodeVisitor):
    def __init__(self, known: set[str]) -> None:
        self.known, self.found = known, set()

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level == 0 and node.module and node.module.startswith("sononet"):
            for alias in node.names:  # `from pkg import submodule` imports the submodule
                sub = f"{node.module}.{alias.name}"
                self.found.add(sub if sub in self.known else node.module)

    def visit_Import(self, node: ast.Import) -> None:
        self.found.update(a.name for a in node.names if a.name in self.known)


def edges() -> dict[str, set[str]]:
    mods = modules()
    graph = {}
    for name, path in mods.items():
        visitor = _Imports(set(mods))
        visitor.visit(ast.parse(path.read_text()))
        graph[name] = {m for m in visitor.found if m != name and m in mods}
    return graph


@pytest.mark.checkout  # reads the repository, not the installed package
def test_every_module_has_a_layer() -> None:
    for name in modules():
        layer(name)


@pytest.mark.checkout
def test_no_upward_import() -> None:
    upward = sorted(
        f"{src} (layer {layer(src)}) imports {dst} (layer {layer(dst)})"
        for src, dsts in edges().items()
        for dst in dsts
        if layer(dst) > layer(src) and not dst.startswith(src + ".")  # a package may import its parts
    )
    assert not upward, "\n".join(upward)


@pytest.mark.checkout  # reads the repository, not the installed package
def test_no_import_cycle() -> None:
    graph = edges()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not cycles, cycles
