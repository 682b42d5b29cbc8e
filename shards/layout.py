"""Where each object of a dataset lives under its root (see docs/format.md), and the names allowed there.

Every path a reader or writer touches is derived here from a unit id or a hook name, and every path read
back from a manifest or commit record is checked against that derivation: a hostile or damaged record
cannot make actlake read or write outside the dataset root.
"""

from __future__ import annotations

import re
from numbers import Integral

MANIFEST = "manifest.json"
DATA_DIR = "data"
COMMITS_DIR = "_commits"
STATS_DIR = "stats"
ARTIFACTS_DIR = "artifacts"
LOCK = "_lock.json"

#: unit ids are 0 .. MAX_UNIT_ID (file names stay sortable; Arrow and JSON hold them exactly)
MAX_UNIT_ID = 2**31 - 1
#: hook and metadata column names: letters, digits and ``_ . - : +``, starting with a letter, digit or ``_``
NAME_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:+\-]{0,199}")
_UNIT_FILE = re.compile(r"unit-(\d{6,10})\.(parquet|json)")
#: temporary siblings that Storage writes on local disks before a rename (``<name>.tmp-<12 hex>``)
_TEMP_FILE = re.compile(r"(unit-\d{6,10}\.(parquet|json)|manifest\.json|[^/]+\.npz)\.tmp-[0-9a-f]{12}")


def check_unit_id(unit_id) -> int:
    """``unit_id`` as an int, or a ValueError/TypeError before anything is written.

    Only integers (Python or numpy) count: ``1.7``, ``True`` and ``"3"`` are refused rather than truncated.
    """
    if isinstance(unit_id, bool) or not isinstance(unit_id, Integral):
        raise TypeError(f"unit ids are integers 0..{MAX_UNIT_ID}; got {unit_id!r} ({type(unit_id).__name__})")
    if not 0 <= int(unit_id) <= MAX_UNIT_ID:
        raise ValueError(f"unit id {unit_id} is out of range; unit ids are integers 0..{MAX_UNIT_ID}")
    return int(unit_id)


def check_name(kind: str, name) -> str:
    """A hook or column name that is safe as a file name and a Parquet column (see ``NAME_PATTERN``)."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise ValueError(f"{kind} name {name!r} is not allowed: use letters, digits and _ . - : + "
                         "(at most 200 characters, starting with a letter, digit or _), e.g. 'resid.3'")
    return name


def unit_name(unit_id: int) -> str:
    """``unit-000017``: the stem shared by a unit's data file and commit record."""
    return f"unit-{check_unit_id(unit_id):06d}"


def unit_data_path(unit_id: int) -> str:
    return f"{DATA_DIR}/{unit_name(unit_id)}.parquet"


def unit_commit_path(unit_id: int) -> str:
    return f"{COMMITS_DIR}/{unit_name(unit_id)}.json"


def stats_path(hook: str) -> str:
    return f"{STATS_DIR}/{check_name('hook', hook)}.npz"


def artifact_path(name: str) -> str:
    """``artifacts/<name>``: a file stored with the dataset (the unembedding for the logit lens, say)."""
    return f"{ARTIFACTS_DIR}/{check_name('artifact', name)}"


def parse_unit_name(filename: str) -> int | None:
    """Unit id of ``unit-000017.parquet`` / ``unit-000017.json``; None for anything else.

    Only the exact names ``unit_name`` makes count (``unit-17.json`` or ``unit-0000017.json`` do not).
    """
    m = _UNIT_FILE.fullmatch(filename)
    if m is None or int(m.group(1)) > MAX_UNIT_ID or unit_name(int(m.group(1))) != filename.rsplit(".", 1)[0]:
        return None
    return int(m.group(1))


def is_temp_file(filename: str) -> bool:
    """A temporary file a killed writer left (never read; ``verify --repair`` removes it)."""
    return _TEMP_FILE.fullmatch(filename) is not None
