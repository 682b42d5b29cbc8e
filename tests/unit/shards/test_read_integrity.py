"""Reads verify what they read (issue 9, items 1-2): the corruption matrix of the attack run.

Each damage is made for real on real files: a byte flipped inside a tensor page, a unit copied over
another, a truncated file, a garbled footer, a manifest that lists a unit twice or was edited to fewer
rows. Every read path (zero-copy page views, pyarrow decoding, compressed files, S3, ``take``,
``to_numpy``) must raise ``CorruptDataError`` naming the file instead of returning altered rows.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

import shards
from shards.errors import CorruptDataError, CorruptManifestError
from tests.helpers import edit_manifest, listed_units, unit_file, unit_rel, write_dataset

HOOK = {"h": {"shape": [64], "dtype": "float16"}}
V1 = Path(__file__).resolve().parents[2] / "historical_datasets" / "v1"


def flip_in_column(path: Path, column: str, row_group: int = 0) -> None:
    """Flip one byte in the middle of ``column``'s pages (inside the tensor values, past the page header)."""
    meta = pq.ParquetFile(path).metadata
    names = [meta.schema.column(i).name for i in range(meta.num_columns)]
    chunk = meta.row_group(row_group).column(names.index(column))
    data = bytearray(path.read_bytes())
    data[chunk.data_page_offset + chunk.total_compressed_size // 2] ^= 0x55
    path.write_bytes(bytes(data))


def read_everything(ds, zero_copy: bool = True) -> None:
    ds.zero_copy = zero_copy
    for _ in ds.iter_batches(batch_size=17, shuffle=True, columns=["example_id"]):
        pass


@pytest.mark.parametrize("compression,zero_copy", [("none", True), ("none", False), ("zstd", False)])
def test_flipped_tensor_byte_is_refused_by_every_read_path(tmp_path, compression, zero_copy):
    uri = str(tmp_path / "ds")
    write_dataset(uri, units=3, rows=200, hooks=HOOK, compression=compression)
    flip_in_column(unit_file(tmp_path / "ds", 1), "h")
    with pytest.raises(CorruptDataError, match=r"unit-000001-[0-9a-f]{8}\.parquet"):
        read_everything(shards.open_dataset(uri), zero_copy)
    with pytest.raises(CorruptDataError, match=r"unit-000001-[0-9a-f]{8}\.parquet"):
        shards.open_dataset(uri).to_numpy("h")
    ds = shards.open_dataset(uri)
    ds.take([0, 599])  # rows of the intact units still read
    with pytest.raises(CorruptDataError, match="unit-000001"):
        ds.take([250])


def test_unit_copied_over_another_is_refused(tmp_path):
    uri = str(tmp_path / "ds")
    write_dataset(uri, units=8, rows=100, hooks=HOOK)
    root = tmp_path / "ds"
    # two units whose files have the same size (their footers' statistics print in a few digits more or less)
    sizes = {u: unit_file(root, u).stat().st_size for u in range(8)}
    a, b = next((a, b) for a in range(8) for b in range(a + 1, 8) if sizes[a] == sizes[b])
    shutil.copyfile(unit_file(root, a), unit_file(root, b))  # same size, valid pages
    with pytest.raises(CorruptDataError, match=rf"unit-00000{b}-[0-9a-f]{{8}}.parquet.*example_id {a * 100}\.\."
                                               rf"{a * 100 + 99}.*{b * 100}\.\.{b * 100 + 99}"):
        read_everything(shards.open_dataset(uri))


@pytest.mark.parametrize("damage", ["truncate", "footer"])
def test_damaged_footer_names_the_file(tmp_path, damage):
    uri = str(tmp_path / "ds")
    write_dataset(uri, units=2, rows=50, hooks=HOOK)
    p = unit_file(tmp_path / "ds", 1)
    raw = bytearray(p.read_bytes())
    if damage == "truncate":
        p.write_bytes(bytes(raw[: len(raw) // 2]))
    else:
        raw[-12:-8] = b"\xff\xff\xff\x7f"  # footer length pointing nowhere
        p.write_bytes(bytes(raw))
    with pytest.raises(CorruptDataError, match=r"unit-000001-[0-9a-f]{8}\.parquet"):
        read_everything(shards.open_dataset(uri))


def test_flipped_byte_on_s3_is_refused(s3_bucket, tmp_path):
    import s3fs

    uri = f"{s3_bucket}/ds"
    write_dataset(uri, units=2, rows=100, hooks=HOOK)
    fs = s3fs.S3FileSystem()
    local = tmp_path / "unit-000000.parquet"
    rel = shards.open_dataset(uri).units[0].path
    fs.get_file(f"{uri}/{rel}", str(local))
    flip_in_column(local, "h")
    fs.put_file(str(local), f"{uri}/{rel}")
    with pytest.raises(CorruptDataError, match=r"unit-000000-[0-9a-f]{8}\.parquet"):
        read_everything(shards.open_dataset(uri))


def test_old_dataset_without_page_checksums_is_hashed_on_open(tmp_path):
    root = tmp_path / "v1"
    shutil.copytree(V1 / "multi-dtype", root)
    flip_in_column(unit_file(root, 1), "resid.0")
    with pytest.raises(CorruptDataError, match=r"unit-000001\.parquet.*checksum"):
        read_everything(shards.open_dataset(str(root)))


def test_manifest_listing_a_unit_twice_is_refused(tmp_path):
    uri = str(tmp_path / "ds")
    write_dataset(uri, units=2, rows=50, hooks=HOOK)
    edit_manifest(tmp_path / "ds", lambda m: listed_units(m).append(listed_units(m)[0]))
    with pytest.raises(CorruptManifestError, match="units \\[0\\] are listed more than once"):
        shards.open_dataset(uri)
    with pytest.raises(CorruptManifestError):
        shards.verify_dataset(uri)


def test_manifest_edited_to_fewer_rows_is_refused(tmp_path):
    uri = str(tmp_path / "ds")
    write_dataset(uri, units=2, rows=50, hooks=HOOK)

    def fewer(m):
        listed_units(m)[1]["rows"] = listed_units(m)[1]["row_groups"][0] = 20

    edit_manifest(tmp_path / "ds", fewer)
    with pytest.raises(CorruptManifestError, match="its unit list has 70 rows, its record says 100"):
        shards.open_dataset(uri).metadata_table(["example_id"])  # refused before a row is read

    def recompute(m):  # an editor who also fixes the counts: the file's footer still disagrees
        m["units"]["rows"] = 70

    edit_manifest(tmp_path / "ds", recompute)
    with pytest.raises(CorruptDataError, match=r"unit-000001-[0-9a-f]{8}\.parquet is damaged: 50 rows"):
        read_everything(shards.open_dataset(uri))
    report = shards.verify_dataset(uri)
    assert not report.ok and unit_rel(tmp_path / "ds", 1) in report.bad
    assert "not the one version" in report.versions["manifest.json"]  # the root against its log entries


def test_intact_dataset_reads_exactly(tmp_path):
    uri = str(tmp_path / "ds")
    ds = write_dataset(uri, units=3, rows=100, hooks=HOOK)
    ids = np.concatenate([b["example_id"].numpy() for b in ds.iter_batches(batch_size=64, shuffle=True)])
    assert sorted(ids.tolist()) == list(range(300))
    assert pq.ParquetFile(unit_file(tmp_path / "ds", 0)).metadata.metadata[
        b"actlake.page_checksums"] == b"crc32"
