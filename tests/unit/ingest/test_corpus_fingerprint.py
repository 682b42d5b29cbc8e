"""The corpus fingerprint sees every row (attack on round three, F18): it hashed the length and the first and last 64
rows, so a corpus edited in the middle (same length) resumed as the same job and mixed two corpora."""

from __future__ import annotations

import json

from ingest.corpus import corpus_fingerprint, fingerprint_like, head_tail_fingerprint, load_corpus


def _write(path, texts) -> str:
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return str(path)


def test_an_edit_in_the_middle_changes_the_fingerprint(tmp_path):
    texts = [f"example number {i} of the corpus" for i in range(300)]
    a = load_corpus(_write(tmp_path / "a.jsonl", texts))
    edited = list(texts)
    edited[150] = "another text of the same length!!"[: len(texts[150])]
    b = load_corpus(_write(tmp_path / "b.jsonl", edited))
    assert len(a) == len(b) == 300
    assert head_tail_fingerprint(a) == head_tail_fingerprint(b)  # what the old fingerprint could not see
    assert corpus_fingerprint(a) != corpus_fingerprint(b)
    same = load_corpus(_write(tmp_path / "c.jsonl", texts))
    assert corpus_fingerprint(same) == corpus_fingerprint(a)  # content only: another file, the same rows
    # batches of any size give the same fingerprint (one batch in memory at a time)
    assert corpus_fingerprint(a, batch_rows=7) != corpus_fingerprint(b, batch_rows=7)
    assert corpus_fingerprint(a.select(range(150))) == corpus_fingerprint(b.select(range(150)))


def test_a_fingerprint_recorded_before_is_compared_as_it_was_computed(tmp_path):
    a = load_corpus(_write(tmp_path / "a.jsonl", [f"t{i}" for i in range(200)]))
    old = head_tail_fingerprint(a)
    assert fingerprint_like(old, a) == old  # a dataset written before keeps its fingerprint
    assert fingerprint_like(corpus_fingerprint(a), a) == corpus_fingerprint(a)
