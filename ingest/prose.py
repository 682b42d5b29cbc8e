"""``builtin:prose``: real English prose, the same corpus on every machine, for benchmarks and held-out evaluation
on something other than the templated ``builtin:concepts``.

The corpus is a **frozen, versioned snapshot** (``builtin:prose`` is ``builtin:prose?snapshot=1``). A snapshot
reads only files whose content is fixed by a pinned version -- never what happens to be installed on a machine
(Debian's ``/usr/share/doc`` changed when a package was installed, and another machine had other packages, so the
"same" corpus differed between machines and within a day):

- ``python:reference`` -- the Python Language Reference topics of CPython 3.11.7 (``pydoc_data/topics.py``;
  PSF License);
- ``python:docstrings`` -- prose paragraphs of CPython 3.11.7's standard library docstrings (PSF License);
- ``pypi:<package>`` -- the long description and the docstrings of the packages ``constraints.txt`` pins exactly
  (ray, datasets, pyarrow, fsspec, s3fs, botocore, boto3, aiobotocore, croniter), under each package's licence;
- ``aws:<service>`` -- the API documentation that botocore (pinned) ships for each AWS service (Apache-2.0),
  at most ``AWS_WORDS_PER_SERVICE`` words of each so that no service dominates.

Each snapshot's manifest (``prose_snapshots/<N>.json.gz``, in the package) lists every file it reads as
(source, root, path, sha256), the pinned versions, and the sha256 of the documents it yields at the default
``words``. Building the corpus checks every file against its checksum first and refuses, naming the files and the
versions to install, when one differs or is missing; the documents built are then checked against the recorded
digest, so a change to this module's filters cannot silently change a snapshot either (it needs a new snapshot
version: ``python -m ingest.prose freeze N``). The documents are cached per machine
(``$ACTLAKE_CACHE_DIR``, default ``~/.cache/actlake``) and a cached copy is used only when its digest matches.

Paragraphs are kept when they read as prose (>= 12 words, mostly letters, few code symbols, digits or repeated
words, with sentences, starting with a capital letter) and deduplicated exactly; consecutive kept paragraphs of
one file are packed into documents of at most ``words`` words (longer paragraphs are split at sentences, and a
sentence longer than ``words`` at word boundaries), so tables, patch lists and other giants never enter.
"""

from __future__ import annotations

import ast
import functools
import gzip
import hashlib
import html
import json
import os
import platform
import re
import sys
import sysconfig
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from shards.errors import ActlakeError

SNAPSHOT_DIR = Path(__file__).with_name("prose_snapshots")
#: the snapshot ``builtin:prose`` means when none is named
DEFAULT_SNAPSHOT = 1
#: the document size a snapshot's digest is recorded for (``builtin:prose?words=W`` builds another split)
DEFAULT_WORDS = 150
CODE_CHARS = set("{}[]()=<>_/\\|#*$%;`~^@")
_WORD = re.compile(r"[A-Za-z]")
_SENTENCE_MARK = re.compile(r"[.!?](?=\s|$)")
#: Google/NumPy docstring sections: argument lists, not prose
_SECTION = re.compile(r"^(Args|Arguments|Parameters|Params|Returns?|Yields?|Raises|Attributes|Examples?|Keyword "
                      r"Arguments|Kwargs|Shape|Inputs|Outputs|See Also|Usage)\s*:", re.IGNORECASE)
#: words of one botocore service's documentation at most (botocore ships ~3M words; uncapped, AWS would be 95 %)
AWS_WORDS_PER_SERVICE = 4500
STDLIB_SKIP = {"test", "tests", "idlelib", "turtledemo", "ensurepip", "lib2to3", "site-packages", "__pycache__"}
#: vendored code inside a pinned package: under its own authors' licence, not the package's
VENDORED = {"thirdparty", "thirdparty_files", "_vendor", "vendor", "vendored", "_vendored"}
#: the exactly pinned distributions a snapshot may read (constraints.txt), in the order their sources come
PINNED_DISTRIBUTIONS = ("ray", "datasets", "pyarrow", "fsspec", "s3fs", "botocore", "boto3", "aiobotocore",
                        "croniter")


class ProseSnapshotError(ActlakeError, ValueError):
    """A ``builtin:prose`` snapshot cannot be built here exactly: a file it reads differs or is missing."""


# --- what counts as prose ------------------------------------------------------------------------------------
def prose_problem(text: str, min_words: int = 12) -> str | None:
    """Why a paragraph is not running English prose (None: it is). Tables (a glyph list), patch lists and
    changelogs fail on digits, missing sentences or repeated words; code on its symbols."""
    words = text.split()
    if len(words) < min_words:
        return "too short"
    if not text[:1].isupper() or ">>>" in text:
        return "not a sentence start"
    chars = len(text) - text.count(" ")
    if len(_WORD.findall(text)) < 0.7 * chars:
        return "too few letters"
    if sum(c in CODE_CHARS for c in text) > 0.02 * len(text):
        return "code symbols"
    if sum(any(c.isdigit() for c in w) for w in words) > 0.15 * len(words):
        return "numbers (a table, a patch or version list)"
    if len(_SENTENCE_MARK.findall(text)) < max(1, len(words) // 60):
        return "no sentences (a list or table)"
    head = words[:200]  # vocabulary grows slower than length: a long paragraph is judged on its start
    if len(head) >= 40 and len({w.lower() for w in head}) < 0.3 * len(head):
        return "repeated words (a table)"
    return None


def is_prose(text: str, min_words: int = 12) -> bool:
    """A paragraph of running English (see ``prose_problem``)."""
    return prose_problem(text, min_words) is None


def paragraphs(text: str) -> Iterator[str]:
    """Blank-line separated paragraphs, whitespace collapsed."""
    for para in re.split(r"\n\s*\n", text):
        flat = " ".join(para.split())
        if flat:
            yield flat


_RST = [(re.compile(r":[\w:.-]+:`~?([^`<]*?)\s*(?:<[^>]*>)?`"), r"\1"),  # :func:`name`, :ref:`text <target>`
        (re.compile(r"``([^`]+)``"), r"\1"), (re.compile(r"`([^`<]+?)\s*(?:<[^>]*>)?`_{0,2}"), r"\1")]


def plain_docstring(doc: str) -> str:
    """A docstring with reStructuredText roles and literals reduced to their words (``:func:`len``` -> len), so
    a prose paragraph that names code is not taken for code."""
    for pattern, repl in _RST:
        doc = pattern.sub(repl, doc)
    return doc


# --- readers: one per kind of file a snapshot lists ----------------------------------------------------------
def _docstrings(raw: bytes) -> Iterator[str]:
    try:
        tree = ast.parse(raw.decode("utf-8"))
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node)
            if doc:
                yield from (p for p in paragraphs(plain_docstring(doc)) if not _SECTION.match(p))


def _topics(raw: bytes) -> Iterator[str]:
    """The Language Reference topics of ``pydoc_data/topics.py``, read from the file itself (not an import, so the
    text is that of the checked file), in topic order."""
    for node in ast.parse(raw.decode("utf-8")).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "topics":
            topics = ast.literal_eval(node.value)
            for name in sorted(topics):
                yield from paragraphs(topics[name])


def _metadata_description(raw: bytes) -> Iterator[str]:
    from email.parser import BytesParser

    msg = BytesParser().parsebytes(raw)
    body = msg.get_payload() or msg.get("Description") or ""
    yield from paragraphs(str(body))


def metadata_licence(raw: bytes) -> str:
    """A distribution's licence as its METADATA states it."""
    from email.parser import BytesHeaderParser

    head = BytesHeaderParser().parsebytes(raw)
    licence = str(head.get("License-Expression") or "") or str(head.get("License") or "").split("\n")[0]
    return (licence or "see the package's metadata")[:80]


_TAG = re.compile(r"<[^>]+>")
_HTML_BREAK = re.compile(r"</?p>|<br\s*/?>|</?li>|</?ul>|</?note>|</?important>", re.IGNORECASE)


def _aws_documentation(raw: bytes) -> Iterator[str]:
    """The ``documentation`` strings of a botocore ``service-2.json.gz``, in file order, as plain paragraphs;
    at most ``AWS_WORDS_PER_SERVICE`` words of prose."""
    budget = AWS_WORDS_PER_SERVICE

    def walk(obj) -> Iterator[str]:
        if isinstance(obj, dict):
            for key, value in obj.items():
                if key == "documentation" and isinstance(value, str):
                    yield value
                else:
                    yield from walk(value)
        elif isinstance(obj, list):
            for value in obj:
                yield from walk(value)

    for doc in walk(json.loads(gzip.decompress(raw))):
        for part in _HTML_BREAK.split(doc):
            para = " ".join(html.unescape(_TAG.sub(" ", part)).split())
            if para and is_prose(para):
                yield para
                budget -= len(para.split())
                if budget <= 0:
                    return


def _reader(path: str):
    if path.endswith("pydoc_data/topics.py"):
        return _topics
    if path.endswith(".py"):
        return _docstrings
    if path.endswith("/METADATA"):
        return _metadata_description
    if path.endswith("service-2.json.gz"):
        return _aws_documentation
    raise ValueError(f"no prose reader for {path}")


# --- snapshots -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SnapshotFile:
    """One file a snapshot reads: the source its documents name, where it lies (``stdlib`` or ``site``: the
    Python installation's standard library or site-packages folder) and its content's sha256."""

    source: str
    root: str
    path: str
    sha256: str
    license: str


@dataclass(frozen=True)
class Snapshot:
    """A frozen ``builtin:prose``: the files it reads, the versions that fix them, and what it yields."""

    id: int
    python: str  #: the CPython version whose standard library it reads
    distributions: dict[str, str]  #: pinned distribution -> version
    files: tuple[SnapshotFile, ...]
    words: int  #: the document size its digest is for
    documents: int
    total_words: int
    documents_sha256: str  #: ``fingerprint`` of its documents at ``words``

    @property
    def uri(self) -> str:
        return f"builtin:prose?snapshot={self.id}"

    def file_list_sha256(self) -> str:
        """One digest of every (source, root, path, sha256): two machines agree on it iff they read the same
        files with the same content."""
        h = hashlib.sha256()
        for f in self.files:
            h.update(f"{f.source}\t{f.root}\t{f.path}\t{f.sha256}\n".encode())
        return h.hexdigest()

    def provenance(self) -> dict:
        """What a dataset's corpus provenance records of the snapshot: its id, pins, the file list digest and a
        checksum per source group (the digest of its files' paths and sha256s; every file's own is in the package
        manifest; AWS's hundreds of services are one group, to keep manifests small)."""
        per_source: dict[str, hashlib._Hash] = {}
        counts: dict[str, int] = {}
        for f in self.files:
            group = "aws" if f.source.startswith("aws:") else f.source
            per_source.setdefault(group, hashlib.sha256()).update(f"{f.path}\t{f.sha256}\n".encode())
            counts[group] = counts.get(group, 0) + 1
        return {"id": self.uri, "python": self.python, "distributions": dict(self.distributions),
                "files": len(self.files), "file_list_sha256": self.file_list_sha256(),
                "documents": self.documents, "words": self.total_words, "documents_sha256": self.documents_sha256,
                "manifest": f"ingest/prose_snapshots/{self.id}.json.gz",
                "sources": {s: {"files": counts[s], "sha256": h.hexdigest()} for s, h in per_source.items()}}

    def to_json(self) -> dict:
        return {"snapshot": self.id, "python": self.python, "distributions": self.distributions,
                "words": self.words, "documents": self.documents, "total_words": self.total_words,
                "documents_sha256": self.documents_sha256,
                "files": [[f.source, f.root, f.path, f.sha256, f.license] for f in self.files]}

    @classmethod
    def from_json(cls, d: dict) -> Snapshot:
        return cls(id=int(d["snapshot"]), python=d["python"], distributions=dict(d["distributions"]),
                   files=tuple(SnapshotFile(*row) for row in d["files"]), words=int(d["words"]),
                   documents=int(d["documents"]), total_words=int(d["total_words"]),
                   documents_sha256=d["documents_sha256"])


def available_snapshots() -> list[int]:
    return sorted(int(p.name.split(".")[0]) for p in SNAPSHOT_DIR.glob("*.json.gz"))


@functools.lru_cache(maxsize=4)
def load_snapshot(snapshot: int = DEFAULT_SNAPSHOT) -> Snapshot:
    """A snapshot's manifest, as the package ships it; ProseSnapshotError naming the ones there are."""
    path = SNAPSHOT_DIR / f"{snapshot}.json.gz"
    if not path.exists():
        raise ProseSnapshotError(f"builtin:prose has no snapshot {snapshot}; available: "
                                 f"{', '.join(f'snapshot={s}' for s in available_snapshots()) or 'none'}")
    return Snapshot.from_json(json.loads(gzip.decompress(path.read_bytes())))


def _roots() -> dict[str, Path]:
    paths = sysconfig.get_paths()
    return {"stdlib": Path(paths["stdlib"]), "site": Path(paths["purelib"])}


def _read_checked(snap: Snapshot) -> list[bytes]:
    """Every file of the snapshot, each checked against its sha256; ProseSnapshotError naming what differs (and
    the versions that fix it) before any document is built."""
    roots, contents, bad = _roots(), [], []
    for f in snap.files:
        try:
            raw = (roots[f.root] / f.path).read_bytes()
        except OSError:
            bad.append(f"{f.root}/{f.path} (missing)")
            continue
        if hashlib.sha256(raw).hexdigest() != f.sha256:
            bad.append(f"{f.root}/{f.path} (content differs)")
        contents.append(raw)
    if bad:
        pins = ", ".join(f"{d}=={v}" for d, v in snap.distributions.items())
        raise ProseSnapshotError(
            f"{snap.uri} cannot be built on this machine exactly: {len(bad)} of its {len(snap.files)} files differ "
            f"or are missing ({'; '.join(bad[:5])}{'; …' if len(bad) > 5 else ''}). It reads CPython "
            f"{snap.python}'s standard library (this is {platform.python_version()}) and {pins}: install those "
            "versions (pip install -c constraints.txt) or give a corpus file with --data")
    return contents


def build_documents(files: Iterable[tuple[SnapshotFile, bytes]], words: int = DEFAULT_WORDS) -> list[dict]:
    """Documents of at most ``words`` words from ``files`` in order: kept paragraphs deduplicated exactly, the
    kept paragraphs of one file packed together, a document only within one file."""
    seen: set[str] = set()
    unique, texts = [], set()
    for meta, raw in files:
        for text in _file_documents(_reader(meta.path)(raw), words, seen):
            if text not in texts:  # two files can hold one text (a vendored module) and split alike
                texts.add(text)
                unique.append({"text": text, "source": meta.source, "license": meta.license})
    return unique


def _file_documents(paras: Iterable[str], words: int, seen: set[str]) -> list[str]:
    """One file's prose paragraphs not ``seen`` before, packed into documents of at most ``words`` words; a
    short tail (under a third of ``words``) is no document of "about" ``words`` words and is left out."""
    docs, buf, size = [], [], 0
    for para in paras:
        if para in seen or not is_prose(para):
            continue
        seen.add(para)
        for piece in _pieces(para, words):
            n = len(piece.split())
            if buf and size + n > words:
                docs.append(" ".join(buf))
                buf, size = [], 0
            buf.append(piece)
            size += n
    if buf and size >= words // 3:
        docs.append(" ".join(buf))
    return docs


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


def _pieces(para: str, words: int) -> list[str]:
    """A paragraph, or for one longer than ``words`` its sentences, and a sentence longer than ``words`` in
    chunks of ``words`` words: every document stays within ``words``, so a model's context holds it whole."""
    if len(para.split()) <= words:
        return [para]
    out = []
    for sentence in _SENTENCE_END.split(para):
        ws = sentence.split()
        out.extend(" ".join(ws[i:i + words]) for i in range(0, len(ws), words))
    return out


def _cache_path(snapshot: int, words: int) -> Path:
    root = os.environ.get("ACTLAKE_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "actlake")
    return Path(root) / "prose" / f"snapshot-{snapshot}-words-{words}.jsonl.gz"


def _from_cache(path: Path, expected: str | None) -> list[dict] | None:
    """The cached documents when they are exactly the snapshot's (their digest is checked when recorded)."""
    try:
        docs = [json.loads(line) for line in gzip.decompress(path.read_bytes()).splitlines()]
    except (OSError, ValueError, EOFError):
        return None
    if not docs or (expected is not None and fingerprint(docs) != expected):
        return None
    return docs


def _to_cache(path: Path, docs: list[dict]) -> None:
    """Written to a temporary name, then renamed: a reader (another Ray worker) never sees half a file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, delete=False, suffix=".tmp") as tmp:
            tmp.write(gzip.compress(b"\n".join(json.dumps(d, sort_keys=True).encode() for d in docs), 6))
        os.chmod(tmp.name, 0o644)  # the documents are public text: other accounts on the machine may reuse them
        os.replace(tmp.name, path)
    except OSError:  # a read-only home: the corpus is rebuilt next time, nothing is wrong with it
        pass


def snapshot_documents(snapshot: int = DEFAULT_SNAPSHOT, words: int = DEFAULT_WORDS) -> list[dict]:
    """The snapshot's documents (``text``, ``source``, ``license``), from the cache or built from its checked
    files; at the recorded ``words`` their digest must be the manifest's."""
    snap = load_snapshot(snapshot)
    expected = snap.documents_sha256 if words == snap.words else None
    cache = _cache_path(snapshot, words)
    docs = _from_cache(cache, expected)
    if docs is not None:
        return docs
    docs = build_documents(zip(snap.files, _read_checked(snap), strict=True), words)
    if expected is not None and fingerprint(docs) != expected:
        raise ProseSnapshotError(
            f"{snap.uri}: its files are the recorded ones, yet the documents built from them differ from the "
            f"snapshot's (sha256 {fingerprint(docs)[:16]}…, recorded {expected[:16]}…): ingest/prose.py's filters "
            "changed since it was frozen. Freeze a new snapshot (python -m ingest.prose freeze N) rather than "
            "changing one that datasets already name")
    _to_cache(cache, docs)
    return docs


def prose_documents(words: int = DEFAULT_WORDS, snapshot: int = DEFAULT_SNAPSHOT) -> list[dict]:
    """Every document of a snapshot: ``text``, ``source``, ``license``, ``kind`` and ``id``, in the snapshot's
    order (fresh dicts on every call; the documents are read once per process)."""
    return [{**dict(d), "id": f"prose-{i:07d}", "kind": d[1][1].split(":", 1)[0]}
            for i, d in enumerate(_documents(snapshot, words))]


@functools.lru_cache(maxsize=4)
def _documents(snapshot: int, words: int) -> tuple[tuple, ...]:
    # fixed key order (text, source, license): ``kind`` above reads the source from its place
    return tuple((("text", d["text"]), ("source", d["source"]), ("license", d["license"]))
                 for d in snapshot_documents(snapshot, words))


def fingerprint(docs: list[dict]) -> str:
    """sha256 of the documents' texts in order."""
    h = hashlib.sha256()
    for d in docs:
        h.update(d["text"].encode())
        h.update(b"\0")
    return h.hexdigest()


# --- freezing a new snapshot (a developer's step; the manifest then ships in the package) ---------------------
def _candidates() -> list[SnapshotFile]:
    """Every file a new snapshot may read on this machine, in corpus order, with its checksum and licence."""
    roots = _roots()
    std, site = roots["stdlib"], roots["site"]

    def entry(source: str, root: str, path: Path, licence: str) -> SnapshotFile:
        rel = path.relative_to(roots[root]).as_posix()
        return SnapshotFile(source, root, rel, hashlib.sha256(path.read_bytes()).hexdigest(), licence)

    out = [entry("python:reference", "stdlib", std / "pydoc_data" / "topics.py", "PSF-2.0")]
    out += [entry("python:docstrings", "stdlib", p, "PSF-2.0") for p in sorted(std.rglob("*.py"))
            if not set(p.relative_to(std).parts[:-1]) & STDLIB_SKIP and not p.name.startswith("_sysconfigdata")
            and p.relative_to(std).as_posix() != "pydoc_data/topics.py"]
    for dist in PINNED_DISTRIBUTIONS:
        info = _dist_info(dist)
        meta = info / "METADATA"
        licence = metadata_licence(meta.read_bytes())
        out.append(entry(f"pypi:{dist}", "site", meta, licence))
        package = site / dist
        out += [entry(f"pypi:{dist}", "site", p, licence) for p in sorted(package.rglob("*.py"))
                if not set(p.relative_to(package).parts[:-1]) & (STDLIB_SKIP | VENDORED)]
    botocore_licence = metadata_licence((_dist_info("botocore") / "METADATA").read_bytes())
    out += [entry(f"aws:{p.parent.parent.name}", "site", p, botocore_licence)
            for p in sorted((site / "botocore" / "data").glob("*/*/service-2.json.gz"))]
    return out


def _dist_info(dist: str) -> Path:
    site = _roots()["site"]
    found = sorted(site.glob(f"{dist}-*.dist-info"))
    if len(found) != 1:
        raise ProseSnapshotError(f"{dist} is not installed once in {site} (found {[p.name for p in found]})")
    return found[0]


def _dist_version(dist: str) -> str:
    return _dist_info(dist).name[len(dist) + 1:-len(".dist-info")]


def freeze(snapshot: int, words: int = DEFAULT_WORDS) -> Snapshot:
    """Write ``prose_snapshots/<snapshot>.json.gz`` from this machine: the candidate files that yield at least one
    document, their checksums, the pins and the documents' digest. Refuses to replace an existing snapshot."""
    path = SNAPSHOT_DIR / f"{snapshot}.json.gz"
    if path.exists():
        raise ProseSnapshotError(f"{path} exists: a frozen snapshot is never changed; freeze another number")
    roots = _roots()
    contributing = []
    for meta in _candidates():
        raw = (roots[meta.root] / meta.path).read_bytes()
        if build_documents([(meta, raw)], words):  # a file that yields nothing is not read (nor checked) later
            contributing.append(meta)
    raws = [(roots[m.root] / m.path).read_bytes() for m in contributing]
    docs = build_documents(zip(contributing, raws, strict=True), words)
    snap = Snapshot(id=snapshot, python=platform.python_version(),
                    distributions={d: _dist_version(d) for d in PINNED_DISTRIBUTIONS}, files=tuple(contributing),
                    words=words, documents=len(docs), total_words=sum(len(d["text"].split()) for d in docs),
                    documents_sha256=fingerprint(docs))
    SNAPSHOT_DIR.mkdir(exist_ok=True)
    path.write_bytes(gzip.compress(json.dumps(snap.to_json(), separators=(",", ":")).encode(), 9, mtime=0))
    return snap


if __name__ == "__main__":  # python -m ingest.prose freeze N
    if len(sys.argv) != 3 or sys.argv[1] != "freeze":
        sys.exit("usage: python -m ingest.prose freeze SNAPSHOT_NUMBER")
    frozen = freeze(int(sys.argv[2]))
    print(json.dumps({k: v for k, v in frozen.provenance().items() if k != "sources"}, indent=1))
