"""The manifest (``manifest.json``): the single commit point of a dataset."""

from __future__ import annotations

import json
import time
from typing import Any

from shards.errors import DatasetNotFoundError
from shards.storage import Storage

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
DATA_DIR = "data"
COMMITS_DIR = "_commits"
STATS_DIR = "stats"
LOCK = "_lock.json"


def unit_name(unit_id: int) -> str:
    """``unit-000017``: the stem shared by a unit's data file and commit record."""
    if int(unit_id) < 0:
        raise ValueError(f"unit ids are non-negative integers, got {unit_id}")
    return f"unit-{int(unit_id):06d}"


def unit_data_path(unit_id: int) -> str:
    return f"{DATA_DIR}/{unit_name(unit_id)}.parquet"


def unit_commit_path(unit_id: int) -> str:
    return f"{COMMITS_DIR}/{unit_name(unit_id)}.json"


def parse_unit_name(filename: str) -> int | None:
    """Unit id of ``unit-000017.parquet`` / ``unit-000017.json``; None for anything else."""
    stem, _, ext = filename.partition(".")
    if not stem.startswith("unit-") or ext not in ("parquet", "json"):
        return None
    digits = stem[5:]
    return int(digits) if digits.isdigit() else None


def code_version() -> str:
    try:
        from importlib.metadata import version

        return version("actlake")
    except Exception:  # noqa: BLE001 - running from a source tree
        return "0+unknown"


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def dumps(obj: Any) -> bytes:
    return (json.dumps(obj, indent=1, sort_keys=False) + "\n").encode()


def read_manifest(storage: Storage) -> dict:
    """Load and check ``manifest.json``; a clear error when there is none."""
    try:
        raw = storage.get_bytes(MANIFEST)
    except FileNotFoundError:
        hint = ""
        try:
            if storage.list(COMMITS_DIR):
                hint = (" Commit records exist: a writer died before its first manifest; "
                        "reopen it with create_dataset(..., mode='append') or run "
                        "`actlake verify --repair` to fold them in.")
        except Exception:  # noqa: BLE001 - the hint is optional
            pass
        raise DatasetNotFoundError(
            f"no actlake dataset at {storage.display()}: {MANIFEST} not found.{hint} "
            "Check the URI (datasets under a prefix: `actlake ls PREFIX`)."
        ) from None
    manifest = json.loads(raw)
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise DatasetNotFoundError(
            f"{storage.display(MANIFEST)} has format_version {version!r}; this actlake reads "
            f"version {FORMAT_VERSION}. Upgrade actlake."
        )
    return manifest
