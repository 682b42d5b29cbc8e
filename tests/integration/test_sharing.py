"""Datasets shared by URL: a real nginx over HTTPS on loopback (range requests, a login, a flipped byte), a server
without range support (Python's http.server), anonymous reads of a public-read bucket on moto's S3 server."""

from __future__ import annotations

import logging

import numpy as np
import pytest

import shards
from cluster.cli import main
from shards.errors import ConfigError, CorruptDataError, StorageError
from tests.helpers import HOOKS, unit_columns, write_dataset
from tests.webserver import nginx_https, python_http_server

PASSWORD = "s3cr3t-Passw0rd"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """nginx serving a folder over HTTPS (one server and one certificate for the module: fsspec keeps one HTTP
    session per set of options, whose TLS context is made once)."""
    root = tmp_path_factory.mktemp("www")
    with nginx_https(root, tmp_path_factory.mktemp("nginx")) as (url, cert, key):
        mp = pytest.MonkeyPatch()
        mp.setenv("SSL_CERT_FILE", str(cert))
        yield root, url, (cert, key)
        mp.undo()


@pytest.fixture(scope="module")
def served_dataset(served):
    """A dataset of three versions (4, 5 then 6 units) under the served folder."""
    root, url, _ = served
    write_dataset(str(root / "ds"), units=4, rows=40)
    for u in (4, 5):
        with shards.create_dataset(str(root / "ds"), HOOKS, {"label": "string", "score": "float64"},
                                   mode="append") as w:
            w.write_unit(u, unit_columns(u, 40))
    return root / "ds", f"{url}/ds"


def _same(a, b) -> None:
    assert a.num_rows == b.num_rows and a.version == b.version and a.dataset_id == b.dataset_id
    for hook in a.hooks:
        assert a.to_numpy(hook).tobytes() == b.to_numpy(hook).tobytes()
    assert a.metadata_table().equals(b.metadata_table())


def test_a_dataset_served_by_nginx_reads_the_same_bytes_as_on_disk(served_dataset):
    local, url = served_dataset
    a, b = shards.open_dataset(str(local)), shards.open_dataset(url)
    _same(a, b)
    batches = [list(d.iter_batches("resid.0", batch_size=32, shuffle=True, seed=3)) for d in (a, b)]
    assert all(x["resid.0"].equal(y["resid.0"]) for x, y in zip(*batches, strict=True))
    np.testing.assert_array_equal(a.stats("mlp.0").mean, b.stats("mlp.0").mean)
    _same(shards.open_dataset(str(local), version=2), shards.open_dataset(url, version=2))  # an older version too
    from shards.verify import verify_dataset

    report = verify_dataset(url)
    assert report.ok and report.units_checked == 6 and "no listing" in report.notes[0]


def test_a_flipped_byte_behind_the_server_is_the_same_error_as_on_disk(served, tmp_path):
    root, url, _ = served
    write_dataset(str(root / "flip"), units=2, rows=64)
    unit = sorted((root / "flip" / "data").glob("*.parquet"))[1]
    data = bytearray(unit.read_bytes())
    data[len(data) // 2] ^= 0x08
    unit.write_bytes(bytes(data))
    errors = []
    for uri in (str(root / "flip"), f"{url}/flip"):
        with pytest.raises(CorruptDataError) as exc:
            shards.open_dataset(uri).read_unit_table(1)  # every column: the byte is in one of them
        errors.append(exc.value)
    assert errors[0].problem == errors[1].problem and unit.name in str(errors[1])
    from shards.verify import verify_dataset

    assert not verify_dataset(f"{url}/flip").ok  # the checksum over HTTP catches it too


def test_a_server_without_range_requests_is_refused_before_any_read(tmp_path):
    write_dataset(str(tmp_path / "ds"), units=2, rows=10)
    with python_http_server(tmp_path) as url:
        with pytest.raises(StorageError, match="does not answer HTTP range requests.*nginx"):
            shards.open_dataset(f"{url}/ds")
        assert main(["info", f"{url}/ds"]) == 2
        from shards.storage import Storage

        with pytest.raises(StorageError, match="range"):  # fsspec alone would hand back the whole file
            Storage(f"{url}/ds").read_range("manifest.json", 1, 3)


def test_a_url_that_is_not_a_dataset_says_so(served):
    root, url, _ = served
    (root / "empty").mkdir(exist_ok=True)
    with pytest.raises(shards.DatasetNotFoundError, match="manifest.json"):
        shards.open_dataset(f"{url}/empty")


def test_a_login_in_the_url_reads_and_is_never_written(served, served_dataset, tmp_path, caplog, capsys, s3_bucket):
    local, _ = served_dataset
    caplog.set_level(logging.DEBUG, logger="actlake")  # our log lines at every level
    with nginx_https(local.parent, tmp_path / "nginx", {"reader": PASSWORD}, served[2]) as (url, _cert, _key):
        with pytest.raises(StorageError, match="wants a login") as refused:
            shards.open_dataset(f"{url}/ds")
        ds = shards.open_dataset(f"https://reader:{PASSWORD}@{url.split('://')[1]}/ds")
        _same(ds, shards.open_dataset(str(local)))
        assert PASSWORD not in repr(ds) and PASSWORD not in ds.storage.display()
        out = tmp_path / "copy"
        assert main(["copy", f"https://reader:{PASSWORD}@{url.split('://')[1]}/ds", str(out)]) == 0
        # one command, a served dataset with a login and results on S3: the login stays with the web server
        assert main(["probe", "--data", f"https://reader:{PASSWORD}@{url.split('://')[1]}/ds", "--label", "label",
                     "--hooks", "mlp.0", "--out", f"{s3_bucket}/probe"]) == 0
        from shards.storage import Storage

        results = Storage(f"{s3_bucket}/probe")
        assert all(PASSWORD not in results.get_bytes(results.rel(p)).decode(errors="replace")
                   for p in results.find("") if p.endswith((".json", ".html")))
    written = "".join(p.read_text(errors="replace") for p in out.rglob("*") if p.suffix in (".json", ".md"))
    assert PASSWORD not in written and PASSWORD not in caplog.text and PASSWORD not in capsys.readouterr().out
    assert PASSWORD not in str(refused.value)
    assert shards.open_dataset(str(out)).manifest.provenance.derived_from.uri == f"{url}/ds"


def test_writing_to_a_web_server_is_refused_before_any_work(served_dataset, tmp_path):
    local, url = served_dataset
    with pytest.raises(ConfigError, match="read-only"):
        shards.create_dataset(f"{url}/new", {"h": {"shape": [2], "dtype": "float32"}})
    assert main(["copy", str(local), f"{url}/copy"]) == 2
    assert not (local.parent / "copy").exists()


def test_anonymous_reads_of_a_public_bucket(s3_bucket, s3_endpoint, monkeypatch, tmp_path):
    """A dataset made public-read (every object's ACL, as `aws s3 cp --acl public-read` leaves it), read with
    --anonymous (unsigned requests); before, moto refuses the same anonymous read."""
    import boto3

    uri = f"{s3_bucket}/public/ds"
    write_dataset(uri, units=3, rows=20)
    with pytest.raises(StorageError, match="Forbidden|Access Denied"):
        shards.open_dataset(uri, {"anon": True})
    client, bucket = boto3.client("s3", endpoint_url=s3_endpoint), s3_bucket[5:]
    for obj in client.list_objects_v2(Bucket=bucket)["Contents"]:
        client.put_object_acl(Bucket=bucket, Key=obj["Key"], ACL="public-read")
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(key)
    ds = shards.open_dataset(uri, {"anon": True})
    assert ds.storage.arrow_fs is not None  # pyarrow's S3 reads, unsigned
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    _same(ds, shards.open_dataset(uri))
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    assert main(["verify", uri, "--anonymous"]) == 0
    assert main(["copy", uri, str(tmp_path / "mine"), "--anonymous"]) == 0  # public -> local
    assert shards.open_dataset(str(tmp_path / "mine")).num_rows == 60


def test_an_analysis_reads_a_served_dataset_as_a_local_one(served_dataset, tmp_path):
    """Commands that read take the URL as they take a path: a probe over HTTPS gives the local numbers."""
    local, url = served_dataset
    for name, data in (("local", str(local)), ("https", url)):
        assert main(["probe", "--data", data, "--label", "label", "--hooks", "resid.0,mlp.0", "--out",
                     str(tmp_path / name)]) == 0
    import json

    a, b = (json.loads((tmp_path / n / "summary.json").read_text()) for n in ("local", "https"))
    assert a["hooks"] == b["hooks"] and a["dataset"]["dataset_id"] == b["dataset"]["dataset_id"]
    assert b["dataset"]["uri"] == url and a["dataset"]["version"] == b["dataset"]["version"]


def test_an_untrusted_certificate_is_named_at_once_and_a_ca_file_option_trusts_it(served, served_dataset, tmp_path,
                                                                                  caplog, monkeypatch):
    from tests.webserver import self_signed_cert

    local, url = served_dataset
    other_ca, _ = self_signed_cert(tmp_path)  # a CA that did not sign the server's certificate
    caplog.set_level(logging.WARNING, logger="actlake")
    with pytest.raises(StorageError, match="not trusted here.*SSL_CERT_FILE"):
        shards.open_dataset(url, {"ssl_ca_file": str(other_ca)})
    assert "transient error" not in caplog.text  # no retry makes a certificate trusted
    monkeypatch.delenv("SSL_CERT_FILE")
    server_cert = served[2][0]
    _same(shards.open_dataset(url, {"ssl_ca_file": str(server_cert)}), shards.open_dataset(str(local)))
