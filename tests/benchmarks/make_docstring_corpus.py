"""An out-of-distribution English corpus available offline: prose paragraphs of the Python standard library's
docstrings (one JSONL row each, field ``text``), for `sae eval --corpus` beside the templated built-in corpus.

    python tests/benchmarks/make_docstring_corpus.py --out /tmp/docstrings.jsonl --n 2000
"""

from __future__ import annotations

import argparse
import ast
import json
import random
import sysconfig
from pathlib import Path


def paragraphs(root: Path, min_words: int = 20):
    for path in sorted(root.glob("*.py")):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node) or ""
                for para in doc.split("\n\n"):
                    text = " ".join(para.split())
                    # prose only: no doctest, no option tables, no code
                    if len(text.split()) >= min_words and ">>>" not in text and text[0].isupper():
                        yield text


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--n", type=int, default=2000)
    args = ap.parse_args()
    rows = sorted(set(paragraphs(Path(sysconfig.get_paths()["stdlib"]))))
    random.Random(0).shuffle(rows)
    Path(args.out).write_text("".join(json.dumps({"text": t}) + "\n" for t in rows[:args.n]))
    print(f"{min(args.n, len(rows))} of {len(rows)} paragraphs -> {args.out}")


if __name__ == "__main__":
    main()
