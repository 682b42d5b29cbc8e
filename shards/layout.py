"""Where each object of a dataset lives under its root (see docs/format.md)."""

from __future__ import annotations

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


def stats_path(hook: str) -> str:
    return f"{STATS_DIR}/{hook}.npz"


def parse_unit_name(filename: str) -> int | None:
    """Unit id of ``unit-000017.parquet`` / ``unit-000017.json``; None for anything else."""
    stem, _, ext = filename.partition(".")
    if not stem.startswith("unit-") or ext not in ("parquet", "json"):
        return None
    digits = stem[5:]
    return int(digits) if digits.isdigit() else None
