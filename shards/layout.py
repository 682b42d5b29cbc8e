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
COMMITS_DIR = "_commits"  #: formats v1-v3: a commit record per unit, kept
#: format v4: commit records of units not yet in a version; each is removed once a version names its unit, so a
#: writer that opens lists only what a killed writer left, never every unit ever committed
PENDING_DIR = "_pending"
STATS_DIR = "stats"
ARTIFACTS_DIR = "artifacts"
LOCK = "_lock.json"
VERSIONS_DIR = "_versions"
LOG_DIR = "_log"  #: format v3: a record per version of what it changed
CHECKPOINT_DIR = "_checkpoints"  #: format v3: the whole state of some versions
LEAF_DIR = f"{CHECKPOINT_DIR}/leaves"  #: format v3: immutable pieces of unit lists, named by their digest

#: unit ids are 0 .. MAX_UNIT_ID (file names stay sortable; Arrow and JSON hold them exactly)
MAX_UNIT_ID = 2**31 - 1
#: hook and metadata column names: letters, digits and ``_ . - : +``, starting with a letter, digit or ``_``
NAME_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:+\-]{0,199}")
_UNIT_FILE = re.compile(r"unit-(\d{6,10})\.(parquet|json)")
#: format v2 data files: ``unit-000017-<attempt>.parquet``, a new name for every attempt (committed files are
#: immutable; the commit record names the attempt that counts)
_ATTEMPT_FILE = re.compile(r"(unit-\d{6,10})-([0-9a-f]{8})\.parquet")
_VERSION_FILE = re.compile(r"v(\d{9})\.json")
#: format v4: what a version writes besides its log entry carries the tag of the writer session that wrote it, so
#: that no two writers ever write one name (a stale writer's files can never replace the committed ones)
_TAGGED_VERSION_FILE = re.compile(r"v(\d{9})(?:-([0-9a-f]{8}))?\.json")
_STATS_FILE = re.compile(r"(.+)\.v(\d{9})(?:-[0-9a-f]{8})?\.npz")
_TAG = re.compile(r"[0-9a-f]{8}")
#: temporary siblings that Storage writes on local disks before a rename (``<name>.tmp-<12 hex>``)
_TEMP_FILE = re.compile(r"(unit-\d{6,10}(-[0-9a-f]{8})?\.(parquet|json)|manifest\.json|v\d{9}(-[0-9a-f]{8})?\.json|"
                        r"[^/]+\.npz|[0-9a-f]{32}\.parquet)\.tmp-[0-9a-f]{12}")
_LEAF_FILE = re.compile(r"[0-9a-f]{32}\.parquet")


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


def unit_attempt_path(unit_id: int, attempt: str) -> str:
    """``data/unit-000017-<attempt>.parquet``: where one attempt at a unit writes (format v2)."""
    if not re.fullmatch(r"[0-9a-f]{8}", attempt):
        raise ValueError(f"attempt tag {attempt!r} is not 8 hex digits")
    return f"{DATA_DIR}/{unit_name(unit_id)}-{attempt}.parquet"


def is_unit_data_path(unit_id: int, path: str) -> bool:
    """Whether ``path`` is one the format names for unit ``unit_id``: the v1 name or a v2 attempt's name."""
    if path == unit_data_path(unit_id):
        return True
    m = _ATTEMPT_FILE.fullmatch(path[len(DATA_DIR) + 1:]) if path.startswith(f"{DATA_DIR}/") else None
    return m is not None and m.group(1) == unit_name(unit_id)


def version_path(version: int) -> str:
    """``_versions/v000000017.json``: the manifest of version 17, kept after later commits (format v2)."""
    return f"{VERSIONS_DIR}/v{int(version):09d}.json"


def parse_version_name(filename: str) -> int | None:
    m = _VERSION_FILE.fullmatch(filename)
    return int(m.group(1)) if m else None


def log_path(version: int) -> str:
    """``_log/v000000017.json``: what version 17 changed (format v3)."""
    return f"{LOG_DIR}/v{int(version):09d}.json"


def check_tag(tag: str) -> str:
    """A writer session's tag (8 hex digits; "" for what format v3 wrote untagged)."""
    if tag and not _TAG.fullmatch(tag):
        raise ValueError(f"writer tag {tag!r} is not 8 hex digits")
    return tag


def checkpoint_path(version: int, tag: str = "") -> str:
    """``_checkpoints/v000000016-<tag>.json``: the whole state of version 16 and its unit list's leaves, written by
    the writer session ``tag`` (format v4; v3 wrote ``v000000016.json``)."""
    return f"{CHECKPOINT_DIR}/v{int(version):09d}{'-' + check_tag(tag) if tag else ''}.json"


def parse_checkpoint_name(filename: str) -> tuple[int, str] | None:
    """(version, tag) of a checkpoint file name (tag "" for a v3 one); None for anything else."""
    m = _TAGGED_VERSION_FILE.fullmatch(filename)
    return (int(m.group(1)), m.group(2) or "") if m else None


def leaf_path(digest: str) -> str:
    """``_checkpoints/leaves/<xxh3-128 hex>.parquet``: a piece of unit list, named by the digest of its bytes."""
    if not _LEAF_FILE.fullmatch(f"{digest}.parquet"):
        raise ValueError(f"leaf digest {digest!r} is not 32 hex digits")
    return f"{LEAF_DIR}/{digest}.parquet"


def is_leaf_name(filename: str) -> bool:
    return _LEAF_FILE.fullmatch(filename) is not None


def versioned_stats_path(hook: str, version: int, tag: str = "") -> str:
    """``stats/<hook>.v000000017-<tag>.npz``: a hook's merged statistics as of version 17, written by the writer
    session ``tag`` (never rewritten; formats v2 and v3 wrote ``stats/<hook>.v000000017.npz``)."""
    return f"{STATS_DIR}/{check_name('hook', hook)}.v{int(version):09d}{'-' + check_tag(tag) if tag else ''}.npz"


def is_versioned_stats_path(hook: str, path: str) -> bool:
    """Whether ``path`` is a name ``versioned_stats_path`` makes for ``hook``."""
    m = _STATS_FILE.fullmatch(path[len(STATS_DIR) + 1:]) if path.startswith(f"{STATS_DIR}/") else None
    return m is not None and m.group(1) == hook


def unit_commit_path(unit_id: int) -> str:
    """``_commits/unit-000017.json``: a unit's commit record as formats v1-v3 keep it."""
    return f"{COMMITS_DIR}/{unit_name(unit_id)}.json"


def pending_record_path(unit_id: int) -> str:
    """``_pending/unit-000017.json``: a unit's commit record until a version names the unit (format v4)."""
    return f"{PENDING_DIR}/{unit_name(unit_id)}.json"


def record_path(unit_id: int, legacy: bool = False) -> str:
    """Where a unit's commit record is: pending (format v4), or kept under ``_commits/`` (``legacy``)."""
    return unit_commit_path(unit_id) if legacy else pending_record_path(unit_id)


def stats_path(hook: str) -> str:
    return f"{STATS_DIR}/{check_name('hook', hook)}.npz"


def artifact_path(name: str) -> str:
    """``artifacts/<name>``: a file stored with the dataset (the unembedding for the logit lens, say)."""
    return f"{ARTIFACTS_DIR}/{check_name('artifact', name)}"


def parse_data_name(filename: str) -> int | None:
    """Unit id of a data file name of either format (``unit-000017.parquet``, ``unit-000017-0a1b2c3d.parquet``)."""
    m = _ATTEMPT_FILE.fullmatch(filename)
    if m is not None:
        return parse_unit_name(f"{m.group(1)}.parquet")
    return parse_unit_name(filename) if filename.endswith(".parquet") else None


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
