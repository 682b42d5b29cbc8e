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
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Literal

from analysis.common.inputs import DatasetInput
from analysis.common.report_files import REPORT, write_report
from analysis.common.results import draws_run_pages
from shards.errors import ActlakeError
from shards.layout import LOCK, MANIFEST
from shards.manifest import DatasetRef, identity_diff
from shards.secrets import redact, redact_uri
from shards.storage import Storage

log = logging.getLogger("actlake.analysis")
MAX_PREEXISTING = 10_000  #: files of a user's own an output folder may hold beside a run's

RUN = "run.json"
LIBRARIES = ("actlake", "torch", "numpy", "pyarrow", "scikit-learn", "scipy", "ray")


class RunMismatchError(ActlakeError, ValueError):
    """The output already holds a different run."""


def fingerprint_of(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_settings(cfg, neutral: frozenset[str], **extra) -> dict:
    """The settings that make a run: every field of ``cfg`` but the ``neutral`` ones, plus ``extra``. A dataset
    input counts by its URI: the version asked for is replaced by the version read, which the run start adds."""
    def setting(v):
        return (v.uri or None) if isinstance(v, DatasetInput) else v

    return {**{k: setting(v) for k, v in dataclasses.asdict(cfg).items() if k not in neutral}, **extra}


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
    dataset: DatasetRef | None = None  #: the main input (``--data``) and the hooks read
    seeds: dict[str, int] = field(default_factory=dict)
    libraries: dict[str, str] = field(default_factory=library_versions)
    command: str = ""  #: the command that made the run (``stats``, ``align rsa``, ``sae train``)
    preexisting: list[str] = field(default_factory=list)  #: files under the output before the run: never its own
    files: list[str] = field(default_factory=list)  #: every file the run wrote (once it finished)
    inputs: dict[str, DatasetRef] = field(default_factory=dict)  #: every input read, by the option naming it

    def to_json(self) -> dict:
        """What ``run.json`` holds: settings and configuration with every secret-named value removed, in any
        spelling (``shards.secrets.redact``); the fingerprint is of the settings as given."""
        return {"fingerprint": self.fingerprint, "command": self.command, "settings": redact(self.settings),
                "config": redact(self.config), "dataset": self.dataset.to_json() if self.dataset else None,
                "seeds": self.seeds, "libraries": self.libraries, "preexisting": self.preexisting,
                "files": self.files, "inputs": {k: v.to_json() for k, v in self.inputs.items()}}

    @classmethod
    def from_json(cls, d: dict) -> RunRecord:
        ds = d.get("dataset")
        return cls(fingerprint=d["fingerprint"], settings=d.get("settings") or d.get("config") or {},
                   config=d.get("config") or {}, dataset=DatasetRef.from_json(ds) if isinstance(ds, dict) else None,
                   seeds=d.get("seeds") or {}, libraries=d.get("libraries") or {}, command=d.get("command") or "",
                   preexisting=list(d.get("preexisting") or []), files=list(d.get("files") or []),
                   inputs={k: DatasetRef.from_json(v) for k, v in (d.get("inputs") or {}).items()})


def _ancestors(uri: str) -> list[str]:
    """The URIs of the folders (prefixes) above ``uri``, nearest first, up to the root or the bucket."""
    scheme, sep, path = uri.partition("://")
    if not sep:
        path, scheme = os.path.abspath(uri), ""
    parts = [p for p in path.split("/") if p]
    keep = 1 if sep else 0  # a bucket is the top of an object store
    out = []
    for n in range(len(parts) - 1, keep - 1, -1):
        joined = "/".join(parts[:n])
        out.append(f"{scheme}://{joined}" if sep else "/" + joined)
    return out


def refuse_dataset_place(storage: Storage) -> None:
    """Refuse an output that is a dataset or lies inside one. Reads only: it runs before anything (the output's
    write lock included) creates a folder there, so a refused ``--out DS/data/sub`` leaves no trace in DS."""
    if storage.exists(MANIFEST):
        raise RunMismatchError(f"--out {storage.display()} is a dataset (it holds {MANIFEST}): an analysis writes "
                               "its results beside the data, never into it. Choose another --out, e.g. runs/NAME.")
    for parent in _ancestors(storage.uri):
        if Storage(parent, storage.storage_options).exists(MANIFEST):
            raise RunMismatchError(f"--out {storage.display()} lies inside the dataset {redact_uri(parent)}. "
                                   "Choose an --out outside it, e.g. runs/NAME.")


def refuse_dataset_output(storage: Storage, own: tuple[str, ...] = ()) -> None:
    """An analysis' output never is, holds or lies inside a dataset: ``--overwrite`` would delete its files, and
    its files would mix with the dataset's. ``own``: the datasets the run itself writes there (``sae eval``'s
    per-token rows), which it may hold."""
    refuse_dataset_place(storage)
    held = [d for d in storage.walk_dirs("", maxdepth=4) if d.strip("/") not in own]
    if held:
        raise RunMismatchError(f"--out {storage.display()} holds the dataset {storage.display(held[0])}: an "
                               "analysis' output must not contain datasets. Choose another --out.")


class RunDir:
    """The output directory of one run (any URI): ``state`` says what it holds for a run with ``settings``.

    It never holds a dataset (``refuse_dataset_output``), and replacing another run (``--overwrite``) deletes
    only the files that run wrote: those its ``run.json`` lists once it finished, else every file but the ones
    that were there before it started (a user's own files in a shared folder survive)."""

    def __init__(self, storage: Storage, summary: str = "summary.json", resume_marker: str | None = None,
                 command: str = "", own_datasets: tuple[str, ...] = (), kept: tuple[str, ...] = ()) -> None:
        self.storage, self.summary_name, self.resume_marker = storage, summary, resume_marker
        self.command, self.own_datasets, self.kept = command, own_datasets, kept

    def record(self) -> RunRecord | None:
        try:
            return RunRecord.from_json(json.loads(self.storage.get_bytes(RUN)))
        except FileNotFoundError:
            return None

    def state(self, settings: dict, overwrite: bool = False, clear: bool = True) -> Literal["new", "resume", "done"]:
        """``new``, ``resume`` (a checkpoint of this run) or ``done`` (its summary is written).

        Another run's output is refused naming what differs (the command, or the settings), or with ``overwrite``
        removed (only where ``clear``: in a data-parallel run the driver clears once, before any worker starts).
        """
        refuse_dataset_output(self.storage, self.own_datasets)
        existing = self.record()
        if existing is None:
            return "new"
        if existing.fingerprint != fingerprint_of(settings) or existing.command != self.command:
            if overwrite and clear:
                self._clear(existing)
                return "new"
            raise RunMismatchError(self._mismatch(existing, settings))
        if self.storage.exists(self.summary_name):
            return "done"
        return "resume" if self.resume_marker and self.storage.exists(self.resume_marker) else "new"

    def _mismatch(self, existing: RunRecord, settings: dict) -> str:
        where = self.storage.display()
        if existing.command and self.command and existing.command != self.command:
            return (f"{where} holds an `actlake {existing.command}` run; this is `actlake {self.command}`. Choose "
                    f"another --out (--overwrite replaces that run: only the files it wrote are deleted).")
        diffs = identity_diff(redact(existing.settings), redact(settings))  # run.json holds them redacted
        hint = ""
        if _without_version(redact(existing.settings)) == _without_version(redact(settings)):  # only the data moved
            refs = existing.inputs or ({"data": existing.dataset} if existing.dataset else {})
            pins = ", ".join(f"--{name.replace('_', '-')} {ref.uri}@v{ref.version}" for name, ref in refs.items())
            hint = f" ({pins} reads what it read)" if pins else ""
        return (f"{where} already holds a different run ({'; '.join(diffs) or 'other settings'}). Use the same "
                f"settings to resume it{hint}, --overwrite to replace it, or another --out.")

    def unfinished_versions(self, settings: dict) -> dict[str, int]:
        """The version of each input (by name; ``data``: the main one) that an unfinished run of these
        ``settings`` (bar the versions) planned on, or nothing: a killed run resumes on the versions it planned,
        whatever was committed since."""
        existing = self.record()
        if existing is None or self.storage.exists(self.summary_name):
            return {}
        if _without_version(redact(existing.settings)) != _without_version(redact(settings)):
            return {}
        got = {name: int(v["version"]) for name, v in (existing.settings.get(INPUTS) or {}).items()}
        if existing.settings.get("dataset_version") is not None:
            got["data"] = int(existing.settings["dataset_version"])
        return got

    def unfinished_version(self, settings: dict) -> int | None:
        """The main dataset's version an unfinished run of these ``settings`` planned on (``unfinished_versions``)."""
        return self.unfinished_versions(settings).get("data")

    def _files(self) -> list[str]:
        return sorted(r for r in (self.storage.rel(p) for p in self.storage.find()) if r and r != LOCK)

    def _clear(self, existing: RunRecord) -> None:
        """Remove the other run's files: the ones it listed when it finished, else all but those that were there
        before it started; the write lock this run holds stays."""
        keep = set(existing.preexisting) | {LOCK}
        own = [f for f in existing.files or [f for f in self._files() if f not in keep]
               if not f.startswith(self.kept) or existing.command != self.command]
        for rel in [*own, RUN]:
            if rel not in keep:
                self.storage.delete(rel)
        log.info("--overwrite: removed the %d files of the earlier run at %s%s", len(own), self.storage.display(),
                 f" (kept: {', '.join(self.kept)})" if self.kept and existing.command == self.command else "")

    def start(self, record: RunRecord) -> None:
        """Write ``run.json`` for a new run, naming the files already there (a user's own: never deleted)."""
        record.command = record.command or self.command
        old = self.record()
        if old is not None and old.fingerprint == record.fingerprint:  # a restart: what was there stays as listed
            record.preexisting = old.preexisting
        else:  # a cache a replaced run of this command left (``kept``) is this run's own, not a user's file
            record.preexisting = [f for f in self._files() if f != RUN and not (self.kept and f.startswith(self.kept))]
        if len(record.preexisting) > MAX_PREEXISTING:
            raise RunMismatchError(f"--out {self.storage.display()} holds {len(record.preexisting)} files that no "
                                   "actlake run wrote. Choose an empty folder (or a new prefix) for the results.")
        self.storage.put_bytes(RUN, json.dumps(record.to_json(), indent=1).encode())

    def finish(self, summary: dict) -> None:
        """Write ``report.html``, record every file the run wrote, then write the summary: from now on the run is
        done and a rerun returns it."""
        record = self.record()
        if record is not None:
            keep = set(record.preexisting)
            own = sorted({f for f in self._files() if f not in keep} | {RUN, self.summary_name})
            shown = [f for f in own if f != self.summary_name  # a dataset the run writes is no table of the page
                     and not any(f.startswith(d.rstrip("/") + "/") for d in self.own_datasets)]
            wrote = write_report(self.storage, self.command, summary, shown) if draws_run_pages() else False
            record.files = sorted(set(own) | ({REPORT} if wrote else set()))
            self.storage.put_bytes(RUN, json.dumps(record.to_json(), indent=1).encode())
        self.storage.put_bytes(self.summary_name, json.dumps(summary, indent=1).encode())

    def summary(self) -> dict:
        return json.loads(self.storage.get_bytes(self.summary_name))


#: the settings key of the inputs besides the main one: {name: {"dataset_id": ..., "version": ...}}
INPUTS = "inputs"


def _without_version(settings: dict) -> str:
    """The settings' fingerprint with every input's version left out (what a resumed run may differ in)."""
    others = {name: {k: v for k, v in ref.items() if k != "version"}
              for name, ref in (settings.get(INPUTS) or {}).items()}
    return fingerprint_of({**{k: v for k, v in settings.items() if k != "dataset_version"}, INPUTS: others})


@contextmanager
def output_lock(storage: Storage, what: str) -> Iterator[None]:
    """Hold the output's write lock (two runs never write one output at once), released however the run ends."""
    from shards.lock import WriteLock

    refuse_dataset_place(storage)  # before the lock: acquiring it creates the output's folder
    lock = WriteLock(storage, what=what)
    lock.acquire()
    try:
        yield
    finally:
        lock.release_quietly()
