"""Names written once (issue 37, item 4): the dataset's column names are the constants of ``shards/columns.py``
in every package, and a list of choices a config field offers (an inline ``Literal[...]``) is not written out again
anywhere else (a second copy drifts: one gains a value the other refuses)."""

from __future__ import annotations

import ast
import io
import tokenize
from pathlib import Path

from shards import columns

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("shards", "ingest", "analysis", "cluster")
COLUMN_NAMES = {v for k, v in vars(columns).items() if k.isupper() and isinstance(v, str)}


def sources() -> dict[Path, str]:
    return {p: p.read_text() for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def _literal_lines(tree: ast.AST) -> set[int]:
    """Lines inside a ``Literal[...]``: a flag's choices, which may name a column (``--key stimulus_id``)."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and getattr(node.value, "id", None) == "Literal":
            out |= set(range(node.lineno, node.end_lineno + 1))
    return out


def test_column_names_are_the_constants_of_shards_columns():
    """No string literal that is exactly a column name (docstrings, messages and f-string texts are longer
    strings, so they may mention one)."""
    assert {"example_id", "position", "token_id", "stimulus_id"} <= COLUMN_NAMES
    found = []
    for path, text in sources().items():
        if path == ROOT / "shards" / "columns.py":
            continue
        skip = _literal_lines(ast.parse(text))
        toks = list(tokenize.generate_tokens(io.StringIO(text).readline))
        for i, t in enumerate(toks):
            if t.type != tokenize.STRING or t.start[0] in skip or t.string[1:-1] not in COLUMN_NAMES:
                continue
            if t.string[0] not in "\"'" or toks[i - 1].type == tokenize.STRING or toks[i + 1].type == tokenize.STRING:
                continue  # a prefixed string or part of an implicitly joined text
            found.append(f"{path.relative_to(ROOT)}:{t.start[0]}: {t.string}")
    assert found == [], "use the constants of shards/columns.py"


def _literal_values(node: ast.expr) -> tuple | None:
    if isinstance(node, ast.Subscript) and getattr(node.value, "id", None) == "Literal":
        elts = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        if all(isinstance(e, ast.Constant) for e in elts):
            return tuple(e.value for e in elts)
    return None


def test_a_config_fields_choices_are_written_once():
    """A config field's inline ``Literal`` (a field with a default, in a class) is the only place its values are
    written; where the code that branches on them names them too, the field uses that alias instead."""
    fields: dict[tuple, list[str]] = {}
    everywhere: dict[tuple, list[str]] = {}
    for path, text in sources().items():
        tree = ast.parse(text)
        where = str(path.relative_to(ROOT))
        for node in ast.walk(tree):
            values = _literal_values(node)
            if values is not None:
                everywhere.setdefault(values, []).append(f"{where}:{node.lineno}")
        for cls in (n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)):
            for stmt in cls.body:
                if isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
                    values = _literal_values(stmt.annotation)
                    if values is not None:
                        fields.setdefault(values, []).append(f"{where}:{stmt.lineno}")
    twice = {values: everywhere[values] for values in fields if len(everywhere[values]) > 1}
    assert twice == {}, "name the choices once (an alias beside the code that uses them) and use it in the config"
