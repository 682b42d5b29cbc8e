"""``shards.locations`` (issue 41, finding 2): two URIs are compared as the places they name, not as strings."""

from __future__ import annotations

import pytest

from shards.locations import overlap
from shards.storage import Storage


@pytest.mark.parametrize(("a", "b", "want"), [
    ("s3://b/x", "s3://b/x/", "same"),
    ("s3://b/x/./y/..", "s3a://b//x", "same"),
    ("s3://b/x/data/u", "s3://b/x", "inside"),
    ("s3://b", "s3://b/x", "contains"),
    ("s3://b/xy", "s3://b/x", None),  # a shared prefix of characters is not a folder above
    ("s3://other/x", "s3://b/x", None),
])
def test_object_store_keys_are_normalised(a, b, want, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    assert overlap(Storage(a), Storage(b)) == want


def test_the_same_key_on_another_endpoint_is_another_place(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    here = Storage("s3://b/x")
    assert overlap(Storage("s3://b/x", {"endpoint_url": "http://127.0.0.1:9/"}), here) == "same"  # the default, spelt
    assert overlap(Storage("s3://b/x", {"endpoint_url": "http://127.0.0.1:10"}), here) is None


def test_local_paths_are_resolved(tmp_path, monkeypatch):
    (tmp_path / "ds").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "ds")
    monkeypatch.chdir(tmp_path)
    ds = Storage(str(tmp_path / "ds"))
    for spelling in ("ds", "./ds/", "ds/.", "alias", f"file://{tmp_path}/ds", "ds/../ds", "alias/x/.."):
        assert overlap(Storage(spelling), ds) == "same", spelling
    assert overlap(Storage("alias/new/deeper"), ds) == "inside"  # not there yet: its parent's real path counts
    assert overlap(Storage(str(tmp_path)), ds) == "contains"
    assert overlap(Storage("ds2"), ds) is None
