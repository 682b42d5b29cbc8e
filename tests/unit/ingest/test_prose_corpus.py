"""`builtin:prose`: a frozen snapshot of real English, the same documents on every machine (its files checked
against the package's manifest, its documents against the recorded digest), documents within the documented
size, no tables or patch lists; bad specs refused."""

from __future__ import annotations

import gzip
import hashlib
import json
import re

import pytest

from ingest import prose
from ingest.corpus import CorpusError, builtin_prose, builtin_rows, corpus_provenance, parse_builtin
from ingest.prose import (
    DEFAULT_WORDS,
    PINNED_DISTRIBUTIONS,
    ProseSnapshotError,
    Snapshot,
    SnapshotFile,
    fingerprint,
    is_prose,
    load_snapshot,
    prose_documents,
    prose_problem,
)

# the two giants the attack found in the machine-assembled corpus, in their own formats
GLYPH_TABLE = " ".join(f"U+{c:04X} {name} original" for c, name in
                       enumerate(["space", "exclam", "quotedbl", "numbersign", "dollar", "percent"] * 400, 32))
PATCH_LIST = "SIZE NAME FIXES " + " ".join(
    f"{1000 + 37 * i} 9.0.{i:04d} {msg}" for i, msg in enumerate(
        ["Travis CI is no longer used", "map functionality outside of map.c", "plural messages",
         "functions are global while they could be local"] * 300))


@pytest.fixture(scope="module")
def docs() -> list[dict]:
    return prose_documents()


def test_prose_is_the_frozen_snapshot_on_every_machine(docs):
    snap = load_snapshot(1)
    # the documents are exactly the snapshot's: their digest is the one frozen in the package
    assert fingerprint(docs) == snap.documents_sha256 and len(docs) == snap.documents
    assert sum(len(d["text"].split()) for d in docs) == snap.total_words > 1_000_000  # enough for the benchmarks
    # only files fixed by a pinned version: CPython's standard library and exactly pinned distributions; nothing
    # of /usr/share/doc, whose content changes when any Debian package is installed
    assert {f.root for f in snap.files} == {"stdlib", "site"}
    pinned = tuple(f"{d}/" for d in PINNED_DISTRIBUTIONS) + tuple(f"{d}-" for d in PINNED_DISTRIBUTIONS)
    assert all(f.path.startswith(pinned) for f in snap.files if f.root == "site")
    assert snap.distributions["ray"] == "2.60.0" and snap.python == "3.11.7"
    assert {d["kind"] for d in docs} == {"python", "pypi", "aws"}
    assert all(d["license"] and d["source"].split(":", 1)[0] == d["kind"] for d in docs)
    assert len({d["text"] for d in docs}) == len(docs)  # no document repeats
    assert builtin_rows("builtin:prose?n=5") == builtin_rows("builtin:prose?snapshot=1&n=5")


def test_every_document_is_within_the_documented_size_and_is_prose(docs):
    sizes = [len(d["text"].split()) for d in docs]
    assert max(sizes) <= DEFAULT_WORDS and min(sizes) >= 12
    for d in docs:  # no table or patch list dominates any document: few numbers, mostly letters, sentences
        words, text = d["text"].split(), d["text"]
        assert sum(any(c.isdigit() for c in w) for w in words) <= 0.15 * len(words), d["id"]
        assert sum(c.isalpha() for c in text) >= 0.7 * (len(text) - text.count(" ")), d["id"]
        assert len(re.findall(r"[.!?](?=\s|$)", text)) >= len(words) // 60, d["id"]


def test_tables_patch_lists_and_giants_are_dropped_or_split(docs):
    assert prose_problem(GLYPH_TABLE) is not None and prose_problem(PATCH_LIST) is not None
    assert is_prose("This paragraph explains, in plain words, how the program reads its configuration files.")
    assert not is_prose("x = {'a': [1, 2, 3]}; print(x['a'][0]) # a snippet of code is not prose at all ok")
    assert not is_prose("Too short to count.")
    meta = SnapshotFile("test:giant", "stdlib", "giant.py", "", "test")
    giant = " ".join(d["text"] for d in docs[:60])  # one paragraph of ~8,000 words of real prose
    text = f'"""{GLYPH_TABLE}\n\n{PATCH_LIST}\n\n{giant}"""\n'.encode()
    built = prose.build_documents([(meta, text)], words=150)
    assert len(built) > 40 and all(len(d["text"].split()) <= 150 for d in built)
    assert not any("U+0020" in d["text"] or "9.0.0001" in d["text"] for d in built)
    one_sentence = "Word " * 1000 + "end."  # a "sentence" longer than a document is cut at word boundaries
    assert all(len(p.split()) <= 150 for p in prose._pieces(one_sentence, 150))


def _snapshot_with(tmp_path, monkeypatch, files: list[SnapshotFile], digest: str | None = None) -> int:
    """A snapshot 7 made of ``files`` in a temporary snapshot folder (and cache), as ``freeze`` writes one."""
    roots = prose._roots()
    good = [f for f in files if (roots[f.root] / f.path).exists()]
    docs = prose.build_documents([(f, (roots[f.root] / f.path).read_bytes()) for f in good])
    snap = Snapshot(id=7, python="3.11.7", distributions={"ray": "2.60.0"}, files=tuple(files), words=DEFAULT_WORDS,
                    documents=len(docs), total_words=sum(len(d["text"].split()) for d in docs),
                    documents_sha256=digest or fingerprint(docs))
    monkeypatch.setattr(prose, "SNAPSHOT_DIR", tmp_path / "snapshots")
    monkeypatch.setenv("ACTLAKE_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "snapshots").mkdir(exist_ok=True)
    (tmp_path / "snapshots" / "7.json.gz").write_bytes(gzip.compress(json.dumps(snap.to_json()).encode()))
    prose.load_snapshot.cache_clear()
    prose._documents.cache_clear()
    return len(docs)


def _stdlib_file(path: str, sha256: str | None = None) -> SnapshotFile:
    raw = (prose._roots()["stdlib"] / path).read_bytes()
    return SnapshotFile("python:docstrings", "stdlib", path, sha256 or hashlib.sha256(raw).hexdigest(), "PSF-2.0")


@pytest.fixture
def restore_snapshot_caches():
    yield
    prose.load_snapshot.cache_clear()
    prose._documents.cache_clear()


def test_a_file_that_differs_from_the_snapshot_is_refused(tmp_path, monkeypatch, restore_snapshot_caches):
    _snapshot_with(tmp_path, monkeypatch, [_stdlib_file("argparse.py"), _stdlib_file("json/decoder.py", "0" * 64),
                                           SnapshotFile("pypi:ray", "site", "ray/no_such_file.py", "0" * 64, "x")])
    with pytest.raises(ProseSnapshotError) as err:
        builtin_rows("builtin:prose?snapshot=7&n=3")
    msg = str(err.value)
    assert "builtin:prose?snapshot=7" in msg and "2 of its 3 files" in msg
    assert "stdlib/json/decoder.py (content differs)" in msg and "site/ray/no_such_file.py (missing)" in msg
    assert "CPython 3.11.7" in msg and "ray==2.60.0" in msg  # what to install
    assert isinstance(err.value, ValueError)  # the command line prints it as a message, not a traceback


def test_documents_must_match_the_recorded_digest_and_a_tampered_cache_is_rebuilt(tmp_path, monkeypatch,
                                                                                  restore_snapshot_caches):
    files = [_stdlib_file("argparse.py"), _stdlib_file("json/decoder.py")]
    n = _snapshot_with(tmp_path, monkeypatch, files)
    rows = builtin_rows("builtin:prose?snapshot=7")
    assert len(rows) == n > 0
    cache = prose._cache_path(7, DEFAULT_WORDS)
    cache.write_bytes(gzip.compress(json.dumps({"text": "Planted text.", "source": "x", "license": "x"}).encode()))
    prose._documents.cache_clear()
    assert builtin_rows("builtin:prose?snapshot=7") == rows  # the planted cache is not the snapshot: rebuilt
    # filters that no longer give the frozen documents are refused, not silently a new corpus under an old name
    _snapshot_with(tmp_path, monkeypatch, files, digest="f" * 64)
    cache.unlink()
    with pytest.raises(ProseSnapshotError, match="filters changed since it was frozen"):
        builtin_rows("builtin:prose?snapshot=7")


def test_the_snapshot_goes_into_the_corpus_provenance():
    snap = load_snapshot(1)
    rec = corpus_provenance("builtin:prose?n=800")["snapshot"]
    assert rec["id"] == "builtin:prose?snapshot=1" and rec["file_list_sha256"] == snap.file_list_sha256()
    assert rec["documents_sha256"] == snap.documents_sha256 and rec["files"] == len(snap.files)
    assert rec["distributions"]["botocore"] == "1.43.117" and rec["sources"]["python:reference"]["files"] == 1
    assert corpus_provenance("builtin:concepts") == {} and corpus_provenance("/data/c.jsonl") == {}


def test_seeded_prefix_and_bad_specs(restore_snapshot_caches):
    short, long = builtin_prose(n=50, seed=3), builtin_prose(n=80, seed=3)
    assert [d["id"] for d in short] == [d["id"] for d in long[:50]]  # a longer draw starts with a shorter one
    assert builtin_rows("builtin:prose?n=5&seed=3") == short[:5]
    assert parse_builtin("builtin:prose") == {"n": 0, "seed": 0, "words": 150, "snapshot": 1}
    with pytest.raises(CorpusError, match="available: builtin:concepts, builtin:prose"):
        parse_builtin("builtin:poetry")
    with pytest.raises(CorpusError, match="builtin:prose takes n and seed and words and snapshot"):
        parse_builtin("builtin:prose?lines=3")
    with pytest.raises(CorpusError, match="not an integer"):
        parse_builtin("builtin:prose?n=many")
    with pytest.raises(ProseSnapshotError, match="no snapshot 99; available: snapshot=1"):
        builtin_rows("builtin:prose?snapshot=99&n=3")
