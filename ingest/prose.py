"""``builtin:prose``: real English prose assembled offline from text this machine already has, for benchmarks and
held-out evaluation on something other than the templated ``builtin:concepts``.

Sources, read in a fixed order (each document records its source and licence):

- ``python:reference`` -- the Python Language Reference topics shipped with CPython (``pydoc_data/topics.py``;
  PSF License);
- ``python:docstrings`` -- prose paragraphs of the standard library's module, class and function docstrings
  (PSF License);
- ``debian:<package>`` -- Debian's per-package documentation under ``/usr/share/doc`` (README, NEWS, changelogs,
  copyright notices; text and gzip), each under its package's licence as its ``copyright`` file states;
- ``licenses:<name>`` -- the licence texts of ``/usr/share/common-licenses`` (verbatim copying permitted);
- ``pypi:<package>`` -- the long descriptions in the installed Python packages' ``METADATA`` (each package's
  licence field).

Paragraphs are kept when they read as prose (>= 12 words, mostly letters, few code symbols, starting with a
capital letter) and deduplicated exactly; consecutive kept paragraphs of one source are packed into documents of
about ``words`` words. What a machine has differs from another's, so the corpus is fingerprinted (sha256 of its
texts) and the fingerprint is recorded with every dataset made from it.
"""

from __future__ import annotations

import ast
import functools
import gzip
import hashlib
import re
import sysconfig
from collections.abc import Iterator
from pathlib import Path

DOC_ROOT = Path("/usr/share/doc")
LICENSE_ROOT = Path("/usr/share/common-licenses")
CODE_CHARS = set("{}[]()=<>_/\\|#*$%;`~^@")
_WORD = re.compile(r"[A-Za-z]")


def is_prose(text: str, min_words: int = 12) -> bool:
    """A paragraph of running English: enough words, mostly letters, few code symbols, capitalised start."""
    if len(text.split()) < min_words or not text[:1].isupper() or ">>>" in text:
        return False
    letters = len(_WORD.findall(text))
    code = sum(c in CODE_CHARS for c in text)
    return letters >= 0.7 * len(text.replace(" ", "")) and code <= 0.02 * len(text)


def paragraphs(text: str) -> Iterator[str]:
    """Blank-line separated paragraphs, whitespace collapsed."""
    for para in re.split(r"\n\s*\n", text):
        flat = " ".join(para.split())
        if flat:
            yield flat


def _python_reference() -> Iterator[tuple[str, str, str]]:
    try:
        from pydoc_data.topics import topics
    except ImportError:
        return
    for name in sorted(topics):
        yield "python:reference", "PSF-2.0", topics[name]


def _python_docstrings() -> Iterator[tuple[str, str, str]]:
    root = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(root.glob("*.py")):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, OSError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc:
                    yield "python:docstrings", "PSF-2.0", doc


def _read_text(path: Path) -> str:
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        return raw.decode("utf-8")
    except (OSError, UnicodeDecodeError, EOFError, gzip.BadGzipFile):
        return ""


_DOC_NAME = re.compile(r"^(readme|news|changes|changelog|copyright|authors|faq|history|thanks|todo|bugs)"
                       r"([._-].*)?$", re.IGNORECASE)


def _debian_docs() -> Iterator[tuple[str, str, str]]:
    if not DOC_ROOT.is_dir():
        return
    for pkg in sorted(p for p in DOC_ROOT.iterdir() if p.is_dir()):
        licence = f"see /usr/share/doc/{pkg.name}/copyright"
        for path in sorted(pkg.rglob("*")):
            name = path.name[:-3] if path.name.endswith(".gz") else path.name
            if path.is_file() and (_DOC_NAME.match(name) or name.endswith((".txt", ".md", ".rst"))):
                yield f"debian:{pkg.name}", licence, _read_text(path)


def _licenses() -> Iterator[tuple[str, str, str]]:
    if LICENSE_ROOT.is_dir():
        for path in sorted(LICENSE_ROOT.iterdir()):
            if path.is_file():
                yield f"licenses:{path.name}", "verbatim copying permitted", _read_text(path)


def _pypi_descriptions() -> Iterator[tuple[str, str, str]]:
    # the installation's site-packages folder itself, not importlib.metadata: what that sees depends on sys.path,
    # which differs between a driver and its Ray workers (the corpus must be the same text in every process)
    from email.parser import BytesHeaderParser, BytesParser

    root = Path(sysconfig.get_paths()["purelib"])
    for meta in sorted(root.glob("*.dist-info/METADATA")):
        try:
            raw = meta.read_bytes()
        except OSError:
            continue
        head = BytesHeaderParser().parsebytes(raw)
        name = str(head.get("Name") or meta.parent.name).lower()
        body = BytesParser().parsebytes(raw).get_payload() or head.get("Description") or ""
        licence = str(head.get("License-Expression") or "") or str(head.get("License") or "").split("\n")[0]
        yield f"pypi:{name}", (licence or "see the package's metadata")[:80], str(body)


SOURCES = (_python_reference, _python_docstrings, _debian_docs, _licenses, _pypi_descriptions)


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


def _pieces(para: str, words: int) -> list[str]:
    """A paragraph, or for one longer than ``words`` its sentences (documents then stay near ``words`` words and
    a model's context holds them whole)."""
    return [para] if len(para.split()) <= words else _SENTENCE_END.split(para)


def prose_documents(words: int = 150) -> list[dict]:
    """Every document: ``text``, ``source``, ``license``, ``kind`` and ``id``, in the fixed source order (fresh
    dicts on every call; the scan itself is done once per process)."""
    return [{**d, "id": f"prose-{i:07d}", "kind": d["source"].split(":", 1)[0]}
            for i, d in enumerate(dict(t) for t in _scan(words))]


@functools.lru_cache(maxsize=4)
def _scan(words: int) -> tuple[tuple, ...]:
    seen: set[str] = set()
    docs: list[dict] = []
    for source_fn in SOURCES:
        for source, licence, text in source_fn():
            buf: list[str] = []
            for para in paragraphs(text):
                if not is_prose(para) or para in seen:
                    continue
                seen.add(para)
                for piece in _pieces(para, words):
                    if buf and sum(len(p.split()) for p in buf) + len(piece.split()) > words:
                        docs.append({"text": " ".join(buf), "source": source, "license": licence})
                        buf = []
                    buf.append(piece)
                if sum(len(p.split()) for p in buf) >= words:
                    docs.append({"text": " ".join(buf), "source": source, "license": licence})
                    buf = []
            if buf and sum(len(p.split()) for p in buf) >= words // 3:
                docs.append({"text": " ".join(buf), "source": source, "license": licence})
    unique, texts = [], set()
    for d in docs:  # two versions of one text (a licence, a changelog) can split into the same document
        if d["text"] not in texts:
            texts.add(d["text"])
            unique.append(tuple(d.items()))
    return tuple(unique)


def fingerprint(docs: list[dict]) -> str:
    h = hashlib.sha256()
    for d in docs:
        h.update(d["text"].encode())
        h.update(b"\0")
    return h.hexdigest()
