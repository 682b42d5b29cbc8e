"""A run's output directory: new, resumable or done; refuses to mix two runs; records what the run read.

``run.json`` holds the run's fingerprint, its configuration (secrets removed) and its provenance: the
dataset (id, version, hooks), seeds and library versions. The fingerprint comes from the whole
configuration minus an explicit list of settings that do not change the results, so a new option can
never be left out of it by accident.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Literal

from shards.errors import ActlakeError
from shards.layout import LOCK
from shards.manifest import DatasetRef, identity_diff
from shards.secrets import redact
from shards.storage import Storage

RUN = "run.json"
LIBRARIES = ("actlake", "torch", "numpy", "pyarrow", "scikit-learn", "scipy", "ray")


class RunMismatchError(ActlakeError, ValueError):
    """The output already holds a different run."""


def fingerprint_of(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_settings(cfg, neutral: frozenset[str], **extra) -> dict:
    """The settings that make a run: every field of ``cfg`` but the ``neutral`` ones, plus ``extra``."""
    return {**{k: v for k, v in dataclasses.asdict(cfg).items() if k not in neutral}, **extra}


def library_versions(names=LIBRARIES) -> dict[str, str]:
    out = {}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


@dataclass
class RunRecord:
    """What ``run.json`` holds."""

    fingerprint: str
    settings: dict
    config: dict
    dataset: DatasetRef | None = None
    seeds: dict[str, int] = field(default_factory=dict)
    libraries: dict[str, str] = field(default_factory=library_versions)

    def to_json(self) -> dict:
        return {"fingerprint": self.fingerprint, "settings": self.settings, "config": redact(self.config),
                "dataset": self.dataset.to_json() if self.dataset else None, "seeds": self.seeds,
                "libraries": self.libraries}

    @classmethod
    def from_json(cls, d: dict) -> RunRecord:
        ds = d.get("dataset")
        return cls(fingerprint=d["fingerprint"], settings=d.get("settings") or d.get("config") or {},
                   config=d.get("config") or {}, dataset=DatasetRef.from_json(ds) if isinstance(ds, dict) else None,
                   seeds=d.get("seeds") or {}, libraries=d.get("libraries") or {})


class RunDir:
    """The output directory of one run (any URI): ``state`` says what it holds for a run with ``settings``."""

    def __init__(self, storage: Storage, summary: str = "summary.json", resume_marker: str | None = None) -> None:
        self.storage, self.summary_name, self.resume_marker = storage, summary, resume_marker

    def record(self) -> RunRecord | None:
        try:
            return RunRecord.from_json(json.loads(self.storage.get_bytes(RUN)))
        except FileNotFoundError:
            return None

    def state(self, settings: dict, overwrite: bool = False, clear: bool = True) -> Literal["new", "resume", "done"]:
        """``new``, ``resume`` (a checkpoint of this run) or ``done`` (its summary is written).

        Another run's output is refused naming the settings that differ, or with ``overwrite`` removed
        (only where ``clear``: in a data-parallel run the driver clears once, before any worker starts).
        """
        existing = self.record()
        if existing is None:
            return "new"
        if existing.fingerprint != fingerprint_of(settings):
            if overwrite and clear:
                self._clear()
                return "new"
            diffs = identity_diff(existing.settings, settings)
            hint = ""
            if _without_version(existing.settings) == _without_version(settings):  # only the data moved on
                hint = f" (--data-version {existing.settings.get('dataset_version')} reads what it read)"
            raise RunMismatchError(f"{self.storage.display()} already holds a different run "
                                   f"({'; '.join(diffs) or 'other settings'}). Use the same settings to resume it"
                                   f"{hint}, --overwrite to replace it, or another --out.")
        if self.storage.exists(self.summary_name):
            return "done"
        return "resume" if self.resume_marker and self.storage.exists(self.resume_marker) else "new"

    def unfinished_version(self, settings: dict) -> int | None:
        """The dataset version an unfinished run of these ``settings`` (bar the version) planned on, or None: a
        killed run resumes on the version it planned, whatever was committed since."""
        existing = self.record()
        if existing is None or self.storage.exists(self.summary_name):
            return None
        if _without_version(existing.settings) != _without_version(settings):
            return None
        version = existing.settings.get("dataset_version")
        return int(version) if version is not None else None

    def _clear(self) -> None:
        """Remove the other run's files; the write lock this run holds stays."""
        for path in self.storage.find():
            rel = self.storage.rel(path)
            if rel and rel != LOCK:
                self.storage.delete(rel)

    def start(self, record: RunRecord) -> None:
        self.storage.put_bytes(RUN, json.dumps(record.to_json(), indent=1).encode())

    def finish(self, summary: dict) -> None:
        """Write the summary: from now on the run is done and a rerun returns it."""
        self.storage.put_bytes(self.summary_name, json.dumps(summary, indent=1).encode())

    def summary(self) -> dict:
        return json.loads(self.storage.get_bytes(self.summary_name))


def _without_version(settings: dict) -> str:
    return fingerprint_of({k: v for k, v in settings.items() if k != "dataset_version"})


@contextmanager
def output_lock(storage: Storage, what: str) -> Iterator[None]:
    """Hold the output's write lock (two runs never write one output at once), released however the run ends."""
    from shards.lock import WriteLock

    lock = WriteLock(storage, what=what)
    lock.acquire()
    try:
        yield
    finally:
        lock.release_quietly()
