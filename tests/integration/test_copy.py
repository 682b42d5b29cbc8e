"""``actlake copy`` across real stores (a local disk, moto's S3 server, a second S3 server), killed and resumed,
with bad input refused before any work; ``actlake ls`` over a bucket of many datasets."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import shards
from cluster.cli import main
from shards.errors import ConfigError, CorruptDataError, DatasetNotFoundError
from tests.helpers import HOOKS, unit_columns, write_dataset

ROOT = Path(__file__).resolve().parents[2]
COLUMNS = {"label": "string", "score": "float64"}


def _rows(ds, hooks=None) -> pd.DataFrame:
    """Every row of a dataset as (example_id, position, label, <hook bytes>...), sorted: what must be copied."""
    t = ds.metadata_table(["example_id", "position", "label"]).to_pandas()
    for h in hooks or ds.hooks:
        x = ds.to_numpy(h, dtype="float32").reshape(ds.num_rows, -1)
        t[h] = [r.tobytes() for r in x]
    return t.sort_values(["example_id", "position"]).reset_index(drop=True)


@pytest.fixture(scope="module")
def second_s3():
    """A second S3 server (another endpoint, as a second provider or region would be)."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{server._server.server_port}"
    boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing", aws_secret_access_key="testing",
                 region_name="us-east-1").create_bucket(Bucket="elsewhere")
    yield endpoint
    server.stop()


def test_a_copy_across_three_stores_keeps_every_byte_and_names_its_source(s3_bucket, second_s3, tmp_path,
                                                                          monkeypatch):
    src = str(tmp_path / "src")
    write_dataset(src, units=5, rows=30)
    source = shards.open_dataset(src)
    on_s3 = f"{s3_bucket}/copies/a"
    with monkeypatch.context() as m:  # statistics from the commit records, as for units of a megabyte and more
        m.setattr("shards.copy.RECORD_STATS_FROM", 0)
        assert main(["copy", src, on_s3, "--card-license", "cc-by-4.0"]) == 0
    a = shards.open_dataset(on_s3)
    assert [u.checksum for u in a.units] == [u.checksum for u in source.units]  # the same bytes, re-checked
    assert a.manifest.stats == source.manifest.stats
    assert a.manifest.provenance.derived_from.dataset_id == source.dataset_id
    assert a.manifest.provenance.derived_from.version == source.version
    assert shards.verify_dataset(on_s3).ok
    # S3 -> another endpoint, two hooks, examples 40..99
    far = "s3://elsewhere/b"
    assert main(["copy", on_s3, far, "--hooks", "resid.0,mlp.0", "--examples", "40:100",
                 "--dst-endpoint-url", second_s3]) == 0
    b = shards.open_dataset(far, {"endpoint_url": second_s3})
    assert list(b.hooks) == ["resid.0", "mlp.0"]
    want = _rows(source, ["resid.0", "mlp.0"])
    want = want[(want.example_id >= 40) & (want.example_id < 100)].reset_index(drop=True)
    pd.testing.assert_frame_equal(_rows(b), want)
    assert shards.verify_dataset(far, {"endpoint_url": second_s3}).ok
    prov = b.manifest.provenance
    assert prov.derived_from.uri == on_s3 and prov.derived_from.hooks == ("resid.0", "mlp.0")
    assert prov.details["copy"] == {"version": a.version, "hooks": ["resid.0", "mlp.0"], "rows": "all",
                                    "examples": [40, 100]}
    stats = b.stats("mlp.0")
    np.testing.assert_allclose(stats.mean, np.stack(want["mlp.0"].map(
        lambda r: np.frombuffer(r, np.float32)).to_numpy()).mean(0), rtol=1e-6, atol=1e-7)
    from shards.storage import Storage

    card = Storage(far, {"endpoint_url": second_s3}).read_text("README.md")
    assert "Copied from" in card and on_s3 in card and "examples" in card
    # back to a local disk, rows 10..70 of one older version
    local = tmp_path / "back"
    assert main(["copy", far, str(local), "--endpoint-url", second_s3, "--rows", "10:50"]) == 0
    assert shards.open_dataset(str(local)).num_rows == 40
    got = shards.open_dataset(str(local)).metadata_table(["example_id", "position"]).to_pandas()
    src_rows = b.metadata_table(["example_id", "position"]).to_pandas().iloc[10:50].reset_index(drop=True)
    pd.testing.assert_frame_equal(got, src_rows)


def test_an_older_version_a_filter_and_a_vacuumed_version(tmp_path):
    src = str(tmp_path / "src")
    write_dataset(src, units=3, rows=20)  # versions 1..4: the last with 3 units
    with shards.create_dataset(src, HOOKS, COLUMNS, mode="append") as w:
        w.write_unit(3, unit_columns(3, 20))
    latest = shards.open_dataset(src)
    old = latest.version - 1
    assert main(["copy", src, str(tmp_path / "old"), "--version", str(old)]) == 0
    copied = shards.open_dataset(str(tmp_path / "old"))
    assert copied.num_rows == 60 and copied.manifest.provenance.derived_from.version == old
    assert main(["vacuum", src, "--keep", "1"]) == 0
    with pytest.raises(DatasetNotFoundError, match=f"version {old}"):
        _copy(src, tmp_path / "gone", "--version", str(old))
    with pytest.raises(ConfigError, match="select no row"):
        _copy(src, tmp_path / "none", "--examples", "5000:6000")
    with pytest.raises(ConfigError, match="not in"):
        _copy(src, tmp_path / "nohook", "--hooks", "resid.9")
    with pytest.raises(ConfigError, match="START:STOP"):
        _copy(src, tmp_path / "bad", "--rows", "10")
    with pytest.raises(ConfigError, match="DST is SRC"):
        _copy(src, src, "--overwrite")
    assert shards.open_dataset(src).num_rows == 80
    assert not any((tmp_path / n).exists() for n in ("gone", "none", "nohook", "bad"))


def _copy(src, dst, *flags):
    """The command's function itself (main() turns errors into exit code 2; these tests look at the error)."""
    from cluster.cli import build_parser
    from cluster.share_commands import cmd_copy

    args = build_parser(["copy"]).parse_args(["copy", str(src), str(dst), *flags])
    return cmd_copy(args.cfg)


def test_a_destination_holding_another_dataset_is_refused_unless_overwrite(tmp_path):
    src, other = str(tmp_path / "src"), str(tmp_path / "other")
    write_dataset(src, units=2, rows=10)
    write_dataset(other, units=1, rows=7, seed=5)
    with pytest.raises(ConfigError, match="holds another dataset.*--overwrite"):
        _copy(src, other)
    assert shards.open_dataset(other).num_rows == 7  # untouched
    _copy(src, tmp_path / "c")
    with pytest.raises(ConfigError, match="holds another dataset"):  # the same source, other filters
        _copy(src, tmp_path / "c", "--hooks", "resid.0")
    summary = _copy(src, other, "--overwrite")
    assert summary.rows == 20 and shards.open_dataset(other).dataset_id != ""
    again = _copy(src, other)  # the same copy again: nothing left to do
    assert again.copied_units == 0 and again.rows == 20


def test_a_damaged_source_unit_is_caught_and_nothing_of_it_is_copied(tmp_path):
    src = str(tmp_path / "src")
    write_dataset(src, units=3, rows=10)
    unit = sorted((tmp_path / "src" / "data").glob("*.parquet"))[1]
    data = bytearray(unit.read_bytes())
    data[100] ^= 1
    unit.write_bytes(bytes(data))
    with pytest.raises(CorruptDataError, match="checksum") as exc:
        _copy(src, tmp_path / "dst", "--threads", "1")
    assert unit.name in str(exc.value)
    dst = tmp_path / "dst"
    if (dst / "manifest.json").exists():  # the units before it stay committed; the damaged one is absent
        assert 1 not in {u.id for u in shards.open_dataset(str(dst)).units}


def test_a_killed_copy_resumes_with_every_row_exactly_once(s3_bucket, tmp_path):
    src = str(tmp_path / "src")
    hooks = {"h": {"shape": [8], "dtype": "float16"}}
    with shards.create_dataset(src, hooks, COLUMNS) as w:
        for u in range(300):
            w.write_unit(u, unit_columns(u, 4, hooks))
    dst = f"{s3_bucket}/resumed"
    cmd = [sys.executable, "-m", "cluster.cli", "copy", src, dst, "--threads", "1"]
    log = open(tmp_path / "copy.log", "w")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=dict(os.environ), stdout=log, stderr=log, start_new_session=True)
    from shards.storage import Storage

    store = Storage(dst)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            if len(store.list("data")) >= 20:  # unit files written (each but the one in flight committed)
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the copy ended first: " + (tmp_path / "copy.log").read_text()[-2000:]
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    before = len(store.list("data"))
    assert 20 <= before < 300
    rerun = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    summary = json.loads(rerun.stdout.strip().splitlines()[-1])
    assert summary["copied_units"] <= 300 - before + 1 and summary["rows"] == 1200
    out = shards.open_dataset(dst)
    meta = out.metadata_table(["example_id", "position"]).to_pandas()
    assert not meta.duplicated().any() and len(meta) == 1200
    pd.testing.assert_frame_equal(_rows(out), _rows(shards.open_dataset(src)))
    assert shards.verify_dataset(dst).ok
    assert out.manifest.provenance.derived_from.dataset_id == shards.open_dataset(src).dataset_id


def test_ls_lists_many_datasets_on_s3_with_what_made_them(s3_bucket, capsys):
    hooks = {"h": {"shape": [4], "dtype": "float32"}}
    names = [f"team{t}/run{r:02d}" for t in range(3) for r in range(12)] + ["top"]
    for name in names:
        with shards.create_dataset(f"{s3_bucket}/acts/{name}", hooks, COLUMNS,
                                   provenance={"model": {"name": f"model-{name[:5]}"}},
                                   config={"modality": "text"}) as w:
            w.write_unit(0, unit_columns(0, 3, hooks))
    from shards.storage import Storage

    Storage(f"{s3_bucket}/acts/broken").put_bytes("manifest.json", b"{not json")
    assert main(["ls", f"{s3_bucket}/acts", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == len(names) + 1
    by = {r["uri"].split("/acts/")[1]: r for r in rows}
    assert by["broken"]["problem"] and not by["top"]["problem"]
    assert by["team1/run07"]["model"] == "model-team1" and by["team1/run07"]["modality"] == "text"
    assert by["team1/run07"]["rows"] == 3 and by["team1/run07"]["hooks"] == ["h"]
    assert by["team1/run07"]["version"] == shards.open_dataset(f"{s3_bucket}/acts/team1/run07").version
    assert main(["ls", f"{s3_bucket}/acts"]) == 0
    text = capsys.readouterr().out
    assert "team2/run11" in text and "unreadable" in text and f"{len(names) + 1} dataset(s)" in text


def test_credentials_in_the_urls_reach_no_file_and_no_log(s3_bucket, tmp_path, caplog, capsys):
    import logging

    caplog.set_level(logging.DEBUG, logger="actlake")
    src = str(tmp_path / "src")
    write_dataset(src, units=2, rows=5)
    secret = "wJalrXUtnFEMI-K7MDENG"
    dst = f"s3://AKIAEXAMPLEKEY:{secret}@{s3_bucket[5:]}/with-creds"
    assert main(["copy", src, dst]) == 0
    back = tmp_path / "back"
    assert main(["copy", dst, str(back)]) == 0  # and as a source
    from shards.storage import Storage

    store = Storage(f"{s3_bucket}/with-creds")
    written = [store.get_bytes(store.rel(p)).decode(errors="replace") for p in store.find("")
               if p.endswith((".json", ".md"))]
    written += [p.read_text(errors="replace") for p in back.rglob("*") if p.suffix in (".json", ".md")]
    assert written and not any(secret in w or "AKIAEXAMPLEKEY" in w for w in written)
    out = capsys.readouterr()
    assert secret not in caplog.text + out.out + out.err
    assert shards.open_dataset(str(back)).manifest.provenance.derived_from.uri == f"{s3_bucket}/with-creds"
