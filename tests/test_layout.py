"""The package layout stays readable: imports between distill's modules flow one way (no cycle,
counting imports inside functions too), and every module opens with a docstring saying what it
holds."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "distill"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported(path: Path, known: set[str]) -> set[str]:
    """The distill modules ``path`` imports (``from a.b import c`` counts ``a.b.c`` when that is
    a module, else ``a.b``), at any depth of the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known
                     else node.module for a in node.names]
        else:
            continue
        found.update(n for n in names if n in known)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    # importing a.b.c runs a/__init__ and a/b/__init__ too, but those only hold docstrings here
    return {name: imported(path, known) - {name} for name, path in mods.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycle():
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_cycle_finder_finds_a_planted_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_packages_hold_no_code():
    """``__init__.py`` files are docstrings only, so importing one module never drags in others."""
    for path in PACKAGE.rglob("__init__.py"):
        body = ast.parse(path.read_text(encoding="utf-8")).body
        code = [n for n in body if not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))
                and not (isinstance(n, ast.Assign) and path.parent == PACKAGE)]  # __version__
        assert not code, f"{path}: holds code"


@pytest.mark.parametrize("name", sorted(modules()))
def test_every_module_says_what_it_holds(name):
    path = modules()[name]
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
    assert doc and len(doc.splitlines()[0]) >= 20, f"{path}: no first docstring line saying what it holds"


def test_layers_import_downwards():
    """The libraries (io, model, data, eval, train, deploy, report) never import a command
    module (distill.<command>), and lower layers never import higher ones."""
    order = ["distill.errors", "distill.io.atomic", "distill.model", "distill.data", "distill.eval",
             "distill.io", "distill.train", "distill.deploy", "distill.report", "distill.cli"]
    commands = {"distill.teacher", "distill.student", "distill.compare", "distill.predict",
                "distill.export", "distill.bench", "distill.augment", "distill.serve"}

    def layer(mod: str) -> int:
        best = -1
        for k, prefix in enumerate(order):
            if mod == prefix or mod.startswith(prefix + "."):
                if best < 0 or len(prefix) > len(order[best]):
                    best = k
        return best

    for mod, deps in graph().items():
        if mod in commands or layer(mod) < 0:
            continue
        for dep in deps:
            assert dep not in commands, f"{mod} imports the command module {dep}"
            if dep == "distill.cli":
                assert mod == "distill.cli", f"{mod} imports distill.cli"
            assert layer(dep) <= layer(mod), f"{mod} (layer {order[layer(mod)]}) imports {dep}"
