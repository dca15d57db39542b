"""The package's shape: module-level imports without cycles, Ray only in pipelines/."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "raybird"


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Modules imported at module level (not inside functions, not under TYPE_CHECKING)."""
    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return found


def _graph() -> dict[str, set[str]]:
    files = {_module(p): p for p in ROOT.rglob("*.py")}
    return {m: {i for i in _imports(p) if i in files and i != m} for m, p in files.items()}


def test_no_import_cycles():
    graph, state, cycles = _graph(), {}, []

    def visit(m, stack):
        state[m] = "open"
        for n in sorted(graph[m]):
            if state.get(n) == "open":
                cycles.append(stack[stack.index(n) :] + [n])
            elif n not in state:
                visit(n, stack + [n])
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, cycles


def test_only_pipelines_import_ray():
    """Everything else runs in one process and on a GPU machine without Ray."""
    for path in ROOT.rglob("*.py"):
        module = _module(path)
        uses_ray = any(
            isinstance(n, (ast.Import, ast.ImportFrom))
            and any(name == "ray" or name.startswith("ray.") for name in _names(n))
            for n in ast.walk(ast.parse(path.read_text()))
        )
        assert not uses_ray or module.startswith("raybird.pipelines"), f"{module} imports Ray"


def _names(node) -> list[str]:
    return [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
