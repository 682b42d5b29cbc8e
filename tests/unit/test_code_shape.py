"""The code's shape, checked: the layers of DESIGN.md (shards imports nothing of ours; ingest and analysis
only shards; cluster anything), no import cycle (function-level and ``TYPE_CHECKING`` imports included), no
function over 60 lines. Complexity (C901, max 12) is ruff's job (pyproject.toml)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("shards", "ingest", "analysis", "cluster")
MAY_IMPORT = {"shards": {"shards"}, "ingest": {"ingest", "shards"}, "analysis": {"analysis", "shards"},
              "cluster": set(PACKAGES)}
MAX_LINES = 60


def modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imports_of(path: Path, known: dict[str, Path]) -> set[str]:
    """Our modules that ``path`` imports anywhere: module level, inside functions, and under
    ``if TYPE_CHECKING:`` too. A type a module names is a dependency like any other: a layer that imports a
    higher layer's types only for annotations still sits above it, and a circle of annotation imports is still
    a circle (each module needs the others to be read)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module
                     for a in node.names]
        found |= {n for n in names if n.split(".")[0] in PACKAGES}
    return found


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports_of(path, known) for name, path in known.items()}


def test_layers_import_only_downwards():
    bad = [f"{mod} imports {dep}" for mod, deps in graph().items() for dep in deps
           if dep.split(".")[0] not in MAY_IMPORT[mod.split(".")[0]]]
    assert bad == []


def test_no_import_cycles():
    g = graph()
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in g.get(v, ()):
            if w not in g:
                continue
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
            if len(comp) > 1 or v in g[v]:
                cycles.append(sorted(comp))

    for v in g:
        if v not in index:
            visit(v)
    assert cycles == []


def test_no_function_over_60_lines():
    long = []
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_LINES:
                    long.append(f"{name}.{node.name}: {lines} lines")
    assert long == []


MAX_POSITIONAL = 6


def test_wide_records_are_built_by_keyword():
    """A class given more than six arguments gets them by name: a record of many fields built positionally
    breaks silently when a field is added or reordered."""
    wide = []
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and len(node.args) > MAX_POSITIONAL:
                callee = ast.unparse(node.func).split(".")[-1]
                if callee[:1].isupper() or callee == "cls":
                    wide.append(f"{name}:{node.lineno} {callee}({len(node.args)} positional)")
    assert wide == []


def test_storage_is_touched_through_storage_only():
    """Filesystem calls go through ``shards.storage.Storage`` (retries, secrets scrubbed), never ``.fs`` directly."""
    raw = []
    for name, path in modules().items():
        if name == "shards.storage":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                owner = node.func.value
                if isinstance(owner, ast.Attribute) and owner.attr == "fs":
                    raw.append(f"{name}:{node.lineno} {ast.unparse(node.func)}")
    assert raw == []


def test_type_checking_imports_count(tmp_path):
    """An import under ``if TYPE_CHECKING:`` is an edge of the graph: ``analysis`` importing ``ingest``'s types
    there once put ``analysis`` above ``ingest`` unnoticed."""
    src = tmp_path / "m.py"
    src.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ingest.interventions import X\n")
    assert imports_of(src, {}) == {"ingest.interventions"}


def test_files_are_opened_through_storage_only():
    """``fsspec`` is imported by ``shards/storage.py`` alone: a file named by URI is read with
    ``Storage.for_file(uri, options)`` (retries, credentials out of URIs, secrets out of messages)."""
    raw = []
    for name, path in modules().items():
        if name == "shards.storage":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            mods = ([a.name for a in node.names] if isinstance(node, ast.Import)
                    else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            raw += [f"{name}:{node.lineno} imports {m}" for m in mods if m.split(".")[0] == "fsspec"]
    assert raw == []
