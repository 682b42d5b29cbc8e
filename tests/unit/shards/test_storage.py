"""Storage options, the one retry mechanism, explicit missing-object semantics, the bounded file cache."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import shards
from shards.retry import RetryPolicy, retry
from shards.storage import Storage, StorageOptions
from tests.helpers import write_dataset


def test_storage_options_become_fsspec_options():
    opts = StorageOptions(endpoint_url="http://127.0.0.1:9", region="eu-west-1", profile="lab", anonymous=True,
                          storage_option=["requester_pays=true", "default_block_size=1048576", "acl=private"])
    assert opts.to_fsspec() == {"endpoint_url": "http://127.0.0.1:9", "client_kwargs": {"region_name": "eu-west-1"},
                                "profile": "lab", "anon": True, "requester_pays": True,
                                "default_block_size": 1048576, "acl": "private"}
    with pytest.raises(shards.ConfigError, match="KEY=VALUE"):
        StorageOptions(storage_option=["nonsense"])


def test_retry_only_the_named_exception_classes():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionResetError("reset by peer")
        return "ok"

    fast = RetryPolicy(attempts=4, backoff=0.001)
    assert retry(flaky, retry_on=(ConnectionError,), policy=fast) == "ok" and len(calls) == 3
    calls.clear()
    with pytest.raises(ValueError):
        retry(lambda: calls.append(1) or (_ for _ in ()).throw(ValueError("bad")), retry_on=(ConnectionError,),
              policy=fast)
    assert len(calls) == 1  # not retried
    with pytest.raises(ConnectionError):
        retry(lambda: (_ for _ in ()).throw(ConnectionError("down")), retry_on=(ConnectionError,),
              policy=RetryPolicy(attempts=2, backoff=0.001))


def test_missing_objects(tmp_path):
    st = Storage(str(tmp_path / "root"))
    with pytest.raises(FileNotFoundError):  # missing_ok: the caller handles a missing object
        st.get_bytes("nothing.json")
    st.delete("nothing.json")  # deleting what is gone is fine
    assert st.list("nowhere") == [] and not st.exists("nothing.json")


def test_import_shards_loads_no_framework():
    code = ("import sys, shards; shards.open_dataset; "
            "print(sorted(m for m in ('torch', 'torch.utils.data', 'ray', 'datasets') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_open_files_are_bounded(tmp_path):
    ds = write_dataset(str(tmp_path / "ds"), units=24, rows=5)
    ds.files.capacity = 8
    ids = [i for b in ds.iter_batches(batch_size=7, shuffle=True, seed=3) for i in b["example_id"].tolist()]
    assert sorted(ids) == list(range(120)) and len(ds.files) <= 8
    assert np.array_equal(ds.take([119, 0])["example_id"].numpy(), [119, 0]) and len(ds.files) <= 8


def test_storage_option_secrets_never_reach_the_manifest(tmp_path):
    """--storage-option KEY=VALUE strings are secret when their key is (the job config lands in the manifest)."""
    from dataclasses import asdict

    opts = StorageOptions(storage_option=["secret=SHHH-123", "session_token=TOK-456", "requester_pays=true"])
    write_dataset(str(tmp_path / "ds"), units=1, rows=3, config={"storage": asdict(opts)})
    text = (tmp_path / "ds" / "manifest.json").read_text()
    assert "SHHH-123" not in text and "TOK-456" not in text and "requester_pays=true" in text
    assert "secret=***" in text


def test_native_s3_client_stands_in_only_for_options_it_knows(monkeypatch):
    """Unit files on S3 are read through pyarrow's native client where it can take the s3fs options; a
    profile, an unknown option or ACTLAKE_S3_READER=s3fs keep s3fs."""
    from shards.storage import native_s3

    monkeypatch.delenv("ACTLAKE_S3_READER", raising=False)
    fs = native_s3({"endpoint_url": "http://127.0.0.1:9000", "client_kwargs": {"region_name": "eu-west-1"},
                    "key": "k", "secret": "s", "use_listings_cache": False})
    assert type(fs).__name__ == "S3FileSystem" and fs.region == "eu-west-1"
    assert native_s3({"profile": "dev"}) is None
    assert native_s3({"requester_pays": True}) is None
    monkeypatch.setenv("ACTLAKE_S3_READER", "s3fs")
    assert native_s3({}) is None


def test_for_file_opens_one_file_by_uri(tmp_path, monkeypatch):
    """``Storage.for_file``: the storage of a file's folder and its name, for every file read by URI (a table, a
    prompts file, a direction, an image). A file at the root of the disk is in ``/``, not the current folder."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.csv").write_bytes(b"x,y\n")
    st, name = Storage.for_file(str(tmp_path / "sub" / "a.csv"))
    assert (name, st.get_bytes(name), st.display(name)) == ("a.csv", b"x,y\n", f"{tmp_path}/sub/a.csv")
    monkeypatch.chdir(tmp_path / "sub")
    st, name = Storage.for_file("a.csv")
    assert st.get_bytes(name) == b"x,y\n"
    assert Storage.for_file("/a.csv")[0].uri == "/"
    st, name = Storage.for_file("s3://KEY:SECRET@bucket/labels/a.csv", {"endpoint_url": "http://127.0.0.1:9"})
    assert (st.display(name), st.storage_options["key"]) == ("s3://bucket/labels/a.csv", "KEY")
