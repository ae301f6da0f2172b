"""The package keeps the shape docs/architecture.md describes: small modules, no import cycles, and
each layer importing only the layers below it."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "chatloop"
MAX_LINES = 500

# Which of chatloop's own packages each one may import (docs/architecture.md, "Layers").
# errors, config, fsutil and hardware are the base every layer may use; the command line (cli.py, and each
# layer's own cli.py with its commands) may import anything.
BASE = {"errors", "config", "fsutil", "hardware"}
ALLOWED = {
    "models": BASE,
    "engine": BASE | {"models"},
    "store": BASE,
    "tools": BASE | {"store"},
    "data": BASE | {"models", "store", "tools"},
    "train": BASE | {"models", "data"},
    "evals": BASE | {"models", "engine", "train", "tools"},
    "registry": BASE | {"models", "engine", "store", "evals"},
    "serving": BASE | {"models", "engine", "store", "registry", "tools"},
    "flywheel": BASE | {"models", "engine", "store", "data", "train", "evals", "registry"},
    "server": BASE | {"models", "engine", "store", "registry", "serving", "tools"},
    "bench": BASE | {"models", "engine", "train", "store", "data", "evals", "registry", "flywheel", "serving",
                     "server", "tools"},
}


def modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        if "migrations" in path.parts:
            continue
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def imports(path: Path, known: dict[str, Path]) -> set[str]:
    """chatloop modules imported anywhere in the file (function-level imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("chatloop"):
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                found.add(full if full in known else node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("chatloop."))
    return {m for m in found if m in known}


def test_no_module_is_over_500_lines():
    long = {name: n for name, path in modules().items()
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"split these modules: {long}"


def test_there_is_no_import_cycle():
    known = modules()
    graph = {name: imports(path, known) - {name} for name, path in known.items()}
    state: dict[str, int] = {}  # 1 on the current path, 2 done

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for dep in sorted(graph[name]):
            if state.get(dep) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(dep):] + [name, dep]))
            if dep not in state:
                visit(dep, path + [name])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [])


def test_each_layer_imports_only_the_layers_below_it():
    known = modules()
    wrong = []
    for name, path in known.items():
        layer = name.split(".")[1] if name.count(".") >= 1 else None
        if layer not in ALLOWED or name.endswith(".cli"):  # a layer's cli.py is part of the command line
            continue
        for dep in imports(path, known):
            if "." not in dep:  # the package itself (its version): open to all
                continue
            target = dep.split(".")[1]
            if target != layer and target not in ALLOWED[layer]:
                wrong.append(f"{name} imports {dep}")
    assert not wrong, "\n".join(wrong)
