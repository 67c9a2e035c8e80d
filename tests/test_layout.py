"""The package layout: imports run one way through the stage packages, no cycle, no private name borrowed
from another module, no file over 400 lines. Read from the source with `ast`; nothing is imported."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "taosr"
MAX_LINES = 400

# Each stage package may import the core and the packages of a lower rank, never one of its own rank or above.
CORE = 0
RANK = {"kb": 1, "data": 2, "teacher": 2, "infer": 3, "train": 4, "evaluation": 5, "deploy": 6, "run": 7, "cli": 8}


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def stage_of(module: str) -> str | None:
    """The stage package of `taosr.<pkg>...`, or None for a core module (`taosr.labels`, `taosr` itself)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in RANK else None


def rank(module: str) -> int:
    stage = stage_of(module)
    return CORE if stage is None else RANK[stage]


def imports_of(module: str) -> list[tuple[str, list[str]]]:
    """(imported taosr module, names taken from it) for every import statement in `module`, at any depth."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")
            if node.level:
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target == "taosr" or target.startswith("taosr."):
                names = [a.name for a in node.names]
                # `from . import x` names a module x when one exists
                subs = [f"{target}.{n}" for n in names if f"{target}.{n}" in MODULES]
                out += [(s, []) for s in subs] or [(target, names)]
        elif isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names if a.name.startswith("taosr")]
    return out


GRAPH = {m: sorted({t for t, _ in imports_of(m) if t in MODULES and t != m}) for m in MODULES}


def test_every_module_is_found():
    assert "taosr.labels" in MODULES and "taosr.cli.main" in MODULES and len(MODULES) > 40


@pytest.mark.parametrize("module", sorted(MODULES))
def test_every_import_names_a_module_that_exists(module):
    missing = sorted({t for t, _ in imports_of(module) if t not in MODULES})
    assert not missing, f"{module} imports {missing}, which do not exist"


def test_no_import_cycle():
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in GRAPH[m]:
            if state.get(n) == 1:
                pytest.fail("import cycle: " + " -> ".join(stack[stack.index(n):] + [n]))
            if n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in MODULES:
        if m not in state:
            visit(m)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_follow_the_layer_order(module):
    """core -> kb -> data, teacher -> infer -> train -> evaluation -> deploy -> run -> cli."""
    mine = rank(module)
    for target in GRAPH[module]:
        same_package = stage_of(target) == stage_of(module)
        assert rank(target) < mine or (same_package and (mine > CORE or rank(target) == CORE)), \
            f"{module} (rank {mine}) imports {target} (rank {rank(target)})"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_private_name_from_another_module(module):
    for target, names in imports_of(module):
        private = [n for n in names if n.startswith("_") and not n.startswith("__")]
        assert not private, f"{module} imports private {private} from {target}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_file_over_400_lines(module):
    lines = len(MODULES[module].read_text().splitlines())
    assert lines <= MAX_LINES, f"{MODULES[module]} has {lines} lines"


def test_no_module_level_getattr_reexport():
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text())
        assert not any(isinstance(n, ast.FunctionDef) and n.name == "__getattr__" for n in tree.body), module
