"""The package's shape: data flows one way, and no import goes against it.

The direction is written here once (and drawn in docs/internals.md):

    foundation (errors, paths, contract)
      -> data -> scoring -> models -> harness -> page -> front door (api, cli)

A module may import its own wing, the foundation, and any wing before its own;
never a later one. The check walks every ``import`` in ``itbench/`` (also the
ones inside functions and under ``TYPE_CHECKING``), so a lazy import cannot
hide a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "itbench"

#: The one statement of the data-flow direction: earlier layers never import later ones.
LAYERS: list[tuple[str, ...]] = [
    (
        "itbench.errors",
        "itbench.paths",
        "itbench.contract",
        "itbench.console",
        "itbench.version",
        "itbench.linalg",
        "itbench.locks",
    ),
    ("itbench.data",),
    ("itbench.scoring",),
    ("itbench.models",),
    ("itbench.harness",),
    ("itbench.page",),
    ("itbench.api", "itbench.cli"),
]
WINGS = ("data", "scoring", "models", "harness", "page")


def layer_of(module: str) -> int:
    """Index of the layer a dotted module name belongs to (the package itself is the door)."""
    if module == "itbench":
        return len(LAYERS) - 1
    for index, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return index
    raise AssertionError(f"{module} is in no layer: add it to LAYERS and docs/internals.md")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(text: str, module: str, is_package: bool = False) -> list[tuple[int, str]]:
    """(line, absolute module) for every itbench import in a module's source, relative ones resolved."""
    here = module.split(".")
    package = here if is_package else here[:-1]
    found = []
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            # `from itbench import x` names submodule x when x is one
            targets = [f"{base}.{a.name}" for a in node.names] if base == "itbench" else [base]
            found += [(node.lineno, t) for t in targets]
    return [(line, mod) for line, mod in found if mod == "itbench" or mod.startswith("itbench.")]


def _known(module: str) -> str:
    """Names from the package root (the front door) count as the root itself."""
    name = module.split(".")[1] if module.count(".") else ""
    return module if (PACKAGE / name).is_dir() or (PACKAGE / f"{name}.py").is_file() else "itbench"


def test_every_module_is_in_a_layer() -> None:
    for path in PACKAGE.rglob("*.py"):
        layer_of(module_name(path))


def test_no_import_goes_against_the_data_flow() -> None:
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        me = module_name(path)
        if me == "itbench":  # the front door re-exports lazily from the top
            continue
        for line, target in imports(path.read_text(encoding="utf-8"), me, path.name == "__init__.py"):
            target = _known(target)
            if layer_of(target) > layer_of(me):
                bad.append(f"{path.relative_to(PACKAGE.parent)}:{line} {me} imports {target}")
    assert not bad, "imports against the data flow:\n" + "\n".join(bad)


def test_the_checker_catches_backward_imports() -> None:
    """Lazy, relative and ``from itbench import x`` forms are all resolved and caught."""
    source = (
        "def f():\n    from itbench.page import leaderboard\n"
        "from ..harness.runner import score_submission\n"
        "from itbench import cli\n"
        "if TYPE_CHECKING:\n    import itbench.models.cache\n"
    )
    found = sorted(t for _, t in imports(source, "itbench.data.fake"))
    assert found == ["itbench.cli", "itbench.harness.runner", "itbench.models.cache", "itbench.page"]
    assert all(layer_of(_known(t)) > layer_of("itbench.data.fake") for t in found)


@pytest.mark.parametrize("wing", WINGS)
def test_each_wing_has_a_front_module_that_says_what_it_offers(wing: str) -> None:
    init = PACKAGE / wing / "__init__.py"
    doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
    assert doc and len(doc.split()) >= 12, f"itbench/{wing}/__init__.py needs a docstring"


def test_importing_the_front_door_is_cheap() -> None:
    """``import itbench`` and the CLI's --help must not pay for torch."""
    import subprocess
    import sys

    code = "import sys, itbench, itbench.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --- circles: no two modules may import each other, directly or around a loop ------------------


def _as_module(target: str) -> str:
    """``itbench.harness.worker`` for ``from itbench.harness import worker``; else the module named."""
    parts = target.split(".")
    while parts:
        path = PACKAGE.parent.joinpath(*parts)
        if path.with_suffix(".py").is_file() or (path / "__init__.py").is_file():
            return ".".join(parts)
        parts.pop()
    return target


def _module_imports(text: str, module: str, is_package: bool) -> set[str]:
    """Every itbench module this source imports, ``from package import module`` resolved to the module."""
    found = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found |= {_as_module(f"{node.module}.{a.name}") for a in node.names}
        elif isinstance(node, ast.ImportFrom | ast.Import):
            found |= {_as_module(t) for _, t in imports(ast.unparse(node), module, is_package)}
    return {t for t in found if t.startswith("itbench")} - {module}


def module_graph() -> dict[str, set[str]]:
    graph = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        me = module_name(path)
        graph[me] = _module_imports(path.read_text(encoding="utf-8"), me, path.name == "__init__.py")
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_circles_between_modules() -> None:
    found = circles(module_graph())
    assert not found, "modules that import each other (directly or around a loop):\n" + "\n".join(
        " <-> ".join(group) for group in found
    )


def test_the_circle_finder_finds_circles() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"f"}, "f": {"e"}, "g": set()}
    assert sorted(circles(graph)) == [["a", "b", "c"], ["e", "f"]]
    source = "from itbench.harness import runner, sandbox\ndef f():\n    from itbench.harness.protocols import get\n"
    assert _module_imports(source, "itbench.harness.x", False) == {
        "itbench.harness.runner",
        "itbench.harness.sandbox",
        "itbench.harness.protocols",
    }
