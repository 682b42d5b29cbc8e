"""The one start of every analysis run: the output's write lock, every input pinned at one version, what the
output holds for this run (new, resume, done; ``--overwrite``), and ``run.json`` recording what was read.

Each input (every ``DatasetInput`` field of the config, plus ``extra`` ones such as ``--bands-from``'s datasets)
is read at the version it names (``URI@vN``), else at its default's (an SAE's training data defaults to the version
the SAE was trained on, and must still be the same dataset), else at the version an unfinished run of the same
settings planned on (a killed run resumes on it), else at the latest. Every task then reads the pinned ``Dataset``
objects (they pickle with their version), never "the latest" again.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

from analysis.common.inputs import DatasetInput, inputs_of, ref_of
from analysis.common.results import Results
from analysis.common.rundir import INPUTS, RUN, RunDir, RunRecord, fingerprint_of, output_lock, run_settings
from shards.errors import ActlakeError, ConfigError, DatasetNotFoundError
from shards.manifest import DatasetRef
from shards.reader import Dataset
from shards.storage import Storage

log = logging.getLogger("actlake.analysis")
SUMMARY = "summary.json"
MAIN = "data"  #: the main input: its id, version and hooks are the run's ``dataset``


class InputMismatchError(ActlakeError, ValueError):
    """A default input (an SAE's training data) now holds another dataset than the one it was made from."""


@dataclass(frozen=True)
class RunKind:
    """What kind of run a command starts: how ``run.json`` names it, what its fingerprint leaves out, which files
    mark it finished or resumable, what its lock says."""

    command: str  #: as run.json records it (``align rsa``, ``sae train``)
    neutral: frozenset[str]  #: settings that do not change its results (out of the fingerprint)
    lock: str  #: what the output's write lock says (``stats output``)
    summary: str = SUMMARY  #: written last: the run is done
    resume_marker: str | None = RUN  #: its presence makes an unfinished run resumable (None: never resumes)
    own_datasets: tuple[str, ...] = ()  #: datasets the run writes under its output (``sae eval``'s rows)
    #: what --overwrite leaves of a replaced run: caches valid whatever the settings (``sae explain``'s answers,
    #: keyed by their request's hash)
    kept: tuple[str, ...] = ()


@dataclass(frozen=True)
class InputDefault:
    """Where an input nobody named comes from: ``input`` (with the version it was made from) and the dataset id
    it must still have, said to come from ``source`` (``the SAE at runs/sae``)."""

    input: DatasetInput
    dataset_id: str | None
    source: str


@dataclass
class StartedRun:
    """A run as it starts: every input pinned, the main input's hooks, the output and what it holds."""

    inputs: dict[str, Dataset]  #: by the option that named each (``data``, ``data2``, ``bands_from[0]``)
    hooks: list[str]
    out: Results
    rundir: RunDir
    settings: dict
    state: Literal["new", "resume", "done"]

    @property
    def ds(self) -> Dataset:
        """The main input (``--data``)."""
        return self.inputs[MAIN]

    def dataset_ref(self) -> DatasetRef:
        """The main input as run.json and the summary record it, with the hooks read."""
        return ref_of(self.ds, self.hooks)

    def input_refs(self) -> dict[str, DatasetRef]:
        """Every other input, as recorded."""
        return {name: ref_of(ds) for name, ds in self.inputs.items() if name != MAIN}

    def recorded(self) -> dict[str, Any]:
        """``dataset`` and ``inputs``: what every summary (``RunSummary``) records of the run's inputs."""
        return {"dataset": self.dataset_ref(), "inputs": self.input_refs()}

    def versions(self) -> dict[str, int]:
        """The version pinned of each input: ``with_versions(cfg, run.versions())`` hands them to workers."""
        return {name: ds.version for name, ds in self.inputs.items()}

    def begin(self, cfg, seeds: dict[str, int] | None = None) -> None:
        """Write ``run.json`` (a new run only; a resumed one keeps its own): settings, configuration, every
        input read (the main one with its hooks), seeds and library versions."""
        if self.state != "new":
            return
        self.rundir.start(RunRecord(fingerprint=fingerprint_of(self.settings), settings=self.settings,
                                    config=dataclasses.asdict(cfg), dataset=self.dataset_ref(),
                                    seeds=dict(seeds or {}),
                                    inputs={MAIN: self.dataset_ref(), **self.input_refs()}))


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _check_default(name: str, ds: Dataset, default: InputDefault) -> None:
    if default.dataset_id and ds.dataset_id != default.dataset_id:
        where = ds.storage.display()
        raise InputMismatchError(
            f"{default.source} was made from dataset {default.dataset_id} at {where}, which now holds another "
            f"dataset ({ds.dataset_id}): its rows are not the ones it was made from. Pass {_flag(name)} {where} "
            f"(or {_flag(name)} {where}@vN) to read that dataset anyway, or {_flag(name)} with the dataset it was "
            "made from")


def open_input(name: str, given: DatasetInput | None, default: InputDefault | None, storage,
               planned: int | None = None, opened: dict | None = None) -> Dataset | None:
    """Input ``name`` opened at the version it names, else its default's, else ``planned``, else the latest; a
    default that now holds another dataset is refused. None when neither is given. ``opened``: datasets opened
    for other inputs, by (URI, version asked): two inputs naming one dataset read one version of it."""
    chosen = default.input if given is None else given.or_default(default.input if default else None)
    if chosen is None:
        return None
    if not chosen.uri:
        raise ConfigError(f"{_flag(name)} {chosen}: name the dataset ({_flag(name)} URI@vN)")
    by_default = default is not None and (given is None or not given.uri)
    version = chosen.version if chosen.version is not None else planned
    opened = {} if opened is None else opened
    try:
        key = (chosen.uri, version)
        if key not in opened:
            opened[key] = chosen.open(storage, version)
        ds = opened[key]
    except DatasetNotFoundError:
        if by_default:  # another dataset at its URI may lack that version: name the ids, not the version
            _check_default(name, chosen.at(None).open(storage), default)
        raise
    if by_default:
        _check_default(name, ds, default)
    return ds


def open_inputs(wanted: dict[str, DatasetInput | None], storage, defaults: dict[str, InputDefault] | None = None,
                planned: dict[str, int] | None = None) -> dict[str, Dataset]:
    """Every input of ``wanted`` (and of ``defaults`` not in it) pinned: see ``open_input``."""
    defaults, planned = defaults or {}, planned or {}
    out: dict[str, Dataset] = {}
    opened: dict = {}
    for name in dict.fromkeys([*wanted, *defaults]):
        ds = open_input(name, wanted.get(name), defaults.get(name), storage, planned.get(name), opened)
        if ds is not None:
            out[name] = ds
    return out


def _asked(name: str, wanted: dict[str, DatasetInput | None], defaults: dict[str, InputDefault]) -> bool:
    """Whether input ``name``'s version was asked for (by the user or its default): a resume does not move it."""
    given = wanted.get(name)
    if given is not None and given.version is not None:
        return True
    return bool(given is None or not given.uri) and name in defaults and defaults[name].input.version is not None


def open_run(cfg, kind: RunKind, *, hooks: Callable[[Dataset], list[str]] | None = None,
             defaults: dict[str, InputDefault] | None = None, extra: dict[str, DatasetInput] | None = None,
             clear: bool = True, opened: dict[str, Dataset] | None = None) -> StartedRun:
    """Pin ``cfg``'s inputs and find what ``cfg.out`` holds for this run (without the lock: ``run_start`` takes
    it; a data-parallel worker runs under its driver's). ``hooks(main dataset)``: the hooks the run reads, part of
    its settings; ``defaults``: inputs' defaults; ``extra``: inputs that are not fields (``--bands-from``);
    ``clear``: whether ``--overwrite`` removes another run here (the driver of a data-parallel run clears once);
    ``opened``: the inputs already pinned (``run_start`` opens them before it takes the lock)."""
    out = Results(cfg.out, cfg.storage)
    rundir = RunDir(out.storage, kind.summary, resume_marker=kind.resume_marker, command=kind.command, kept=kind.kept,
                    own_datasets=kind.own_datasets)
    wanted, defaults = wanted_inputs(cfg, extra), defaults or {}

    def settings_of(inputs: dict[str, Dataset]) -> dict:
        main, others = inputs[MAIN], {n: ds for n, ds in inputs.items() if n != MAIN}
        more = {"hooks": hooks(main)} if hooks is not None else {}
        if others:
            more[INPUTS] = {n: {"dataset_id": ds.dataset_id, "version": ds.version} for n, ds in others.items()}
        return run_settings(cfg, kind.neutral, dataset_id=main.dataset_id, dataset_version=main.version, **more)

    inputs = dict(opened) if opened is not None else open_inputs(wanted, cfg.storage, defaults)
    settings = settings_of(inputs)
    planned = {n: v for n, v in rundir.unfinished_versions(settings).items()
               if n in inputs and not _asked(n, wanted, defaults) and inputs[n].version != v}
    if planned:
        moved = ", ".join(f"{n} v{v} (now v{inputs[n].version})" for n, v in planned.items())
        log.info("%s: resuming on the versions the run planned on: %s", rundir.storage.display(), moved)
        inputs.update(open_inputs({n: wanted.get(n) for n in planned}, cfg.storage,
                                  {n: defaults[n] for n in planned if n in defaults}, planned))
        settings = settings_of(inputs)
    found = inputs[MAIN]
    return StartedRun(inputs, hooks(found) if hooks is not None else [], out, rundir, settings,
                      rundir.state(settings, cfg.overwrite, clear))


def wanted_inputs(cfg, extra: dict[str, DatasetInput] | None = None) -> dict[str, DatasetInput | None]:
    """The inputs ``cfg`` names: its ``DatasetInput`` fields, and ``extra`` ones."""
    return {**inputs_of(cfg), **(extra or {})}


@contextmanager
def run_start(cfg, kind: RunKind, *, check: Callable[[dict[str, Dataset]], None] | None = None,
              **kw) -> Iterator[StartedRun]:
    """The run's start: its inputs pinned and ``check``ed (the command's own checks of them: hooks, widths) before
    anything is written, then under the output's write lock (two runs never write one output at once; released
    however the run ends) what the output holds for it (``open_run``; ``kw`` as it takes them)."""
    opened = open_inputs(wanted_inputs(cfg, kw.get("extra")), cfg.storage, kw.get("defaults"))
    if MAIN not in opened:
        raise ConfigError("--data: name the activation dataset to read (URI, or URI@vN for version N)")
    if check is not None:
        check(opened)
    with output_lock(Storage(cfg.out, cfg.storage), kind.lock):
        yield open_run(cfg, kind, opened=opened, **kw)
