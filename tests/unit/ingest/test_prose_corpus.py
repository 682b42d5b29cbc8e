"""`builtin:prose`: real English found offline, deterministic, with sources and licences; bad specs refused."""

from __future__ import annotations

import pytest

from ingest.corpus import CorpusError, builtin_prose, builtin_rows, parse_builtin
from ingest.prose import fingerprint, is_prose, prose_documents


def test_prose_documents_are_prose_with_sources_and_licences():
    docs = prose_documents()
    words = sum(len(d["text"].split()) for d in docs)
    assert words > 500_000  # Debian's docs alone hold far more; a machine without them still has Python's
    assert {d["kind"] for d in docs} >= {"python"}
    assert all(d["license"] and d["source"].split(":", 1)[0] == d["kind"] for d in docs)
    assert len({d["text"] for d in docs}) == len(docs)  # paragraphs deduplicated: no document repeats
    assert fingerprint(prose_documents()) == fingerprint(docs)  # the same machine gives the same corpus


def test_prose_filter_and_seeded_prefix():
    assert is_prose("This paragraph explains, in plain words, how the program reads its configuration files.")
    assert not is_prose("x = {'a': [1, 2, 3]}; print(x['a'][0]) # a snippet of code is not prose at all ok")
    assert not is_prose("Too short to count.")
    short, long = builtin_prose(n=50, seed=3), builtin_prose(n=80, seed=3)
    assert [d["id"] for d in short] == [d["id"] for d in long[:50]]  # a longer draw starts with a shorter one
    assert builtin_rows("builtin:prose?n=5&seed=3") == short[:5]


def test_bad_builtin_specs_are_refused():
    assert parse_builtin("builtin:prose") == {"n": 0, "seed": 0, "words": 150}
    with pytest.raises(CorpusError, match="available: builtin:concepts, builtin:prose"):
        parse_builtin("builtin:poetry")
    with pytest.raises(CorpusError, match="builtin:prose takes n and seed and words"):
        parse_builtin("builtin:prose?lines=3")
    with pytest.raises(CorpusError, match="not an integer"):
        parse_builtin("builtin:prose?n=many")
