"""The writer keeps the job identity a dataset was made with and refuses another job's units."""

from __future__ import annotations

import logging

import pytest

import shards
from tests.helpers import HOOKS, unit_columns, write_dataset
from tests.unit.shards.test_errors import tree

JOB = {"model": "minilm", "hooks": ["embed=embeddings", "resid.0=encoder.layer.0"], "data": "corpus-a"}


def test_another_job_is_refused_naming_what_differs_and_writes_nothing(tmp_path):
    uri = tmp_path / "ds"
    write_dataset(str(uri), units=2, rows=5, job_identity=JOB)
    before = {p: (uri / p).read_bytes() for p in tree(uri)}
    other = {**JOB, "data": "corpus-b"}
    with pytest.raises(shards.JobMismatchError, match=r"different job \(data: 'corpus-a' -> 'corpus-b'\)"):
        shards.create_dataset(str(uri), HOOKS, mode="append", job_identity=other)
    assert {p: (uri / p).read_bytes() for p in tree(uri)} == before
    assert shards.open_dataset(str(uri)).manifest.job_identity == JOB  # the stored identity was not replaced


def test_the_same_job_resumes_whatever_the_spelling(tmp_path):
    uri = str(tmp_path / "ds")
    write_dataset(uri, units=2, rows=5, job_identity=JOB)
    same = {"data": "corpus-a", "hooks": ("embed=embeddings", "resid.0=encoder.layer.0"), "model": "minilm"}
    with shards.create_dataset(uri, HOOKS, mode="append", job_identity=same) as w:
        w.write_unit(2, unit_columns(2, 5))
    assert shards.open_dataset(uri).num_rows == 15


def test_overwrite_and_empty_datasets_take_the_new_identity(tmp_path):
    uri = str(tmp_path / "ds")
    write_dataset(uri, units=1, rows=5, job_identity=JOB)
    write_dataset(uri, units=1, rows=5, mode="overwrite", job_identity={"model": "other"})
    assert shards.open_dataset(uri).manifest.job_identity == {"model": "other"}
    empty = str(tmp_path / "empty")
    shards.create_dataset(empty, HOOKS, job_identity=JOB).close()  # no unit committed: nothing to mix
    shards.create_dataset(empty, HOOKS, mode="append", job_identity={"model": "b"}).close()
    assert shards.open_dataset(empty).manifest.job_identity == {"model": "b"}


def test_a_dataset_without_identity_records_the_first_one_it_sees(tmp_path, caplog):
    uri = str(tmp_path / "ds")
    write_dataset(uri, units=1, rows=5)
    caplog.set_level(logging.WARNING, logger="actlake")
    shards.create_dataset(uri, HOOKS, mode="append", job_identity=JOB).close()
    assert "predates job identities" in caplog.text
    with pytest.raises(shards.JobMismatchError):
        shards.create_dataset(uri, HOOKS, mode="append", job_identity={**JOB, "model": "x"})
