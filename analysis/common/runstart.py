"""Starting an analysis run: the dataset opened once and pinned at one version, what the output holds for this
run (new, resume, done), and ``run.json`` recording the version read.

The version is ``--data-version`` when given, else the latest when the run is planned; a killed run rerun with
the same command resumes on the version it planned on (recorded in its ``run.json``), whatever was committed
since. Every task then reads the pinned ``Dataset`` (it pickles with its version), never "the latest" again.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from analysis.common.results import Results
from analysis.common.rundir import RUN, RunDir, RunRecord, fingerprint_of, run_settings
from shards.reader import Dataset

log = logging.getLogger("actlake.analysis")
SUMMARY = "summary.json"

#: opens the dataset at a version (None: the latest); returns it and the hooks the run reads
Opener = Callable[[int | None], tuple[Dataset, list[str]]]


@dataclass
class StartedRun:
    """An analysis run as it starts: the pinned dataset, its hooks, the output and what it holds."""

    ds: Dataset
    hooks: list[str]
    out: Results
    rundir: RunDir
    settings: dict
    state: Literal["new", "resume", "done"]

    def begin(self, cfg, seeds: dict[str, int] | None = None) -> None:
        """Write ``run.json`` (a new run only; a resumed one keeps its own): settings, configuration, the
        dataset version read, seeds and library versions."""
        if self.state != "new":
            return
        ref = self.ds.manifest.ref(self.ds.storage.display(), self.hooks)
        self.rundir.start(RunRecord(fingerprint=fingerprint_of(self.settings), settings=self.settings,
                                    config=dataclasses.asdict(cfg), dataset=ref, seeds=dict(seeds or {})))


def pin_dataset(open_at: Opener, requested: int | None, rundir: RunDir,
                settings_of: Callable[[Dataset, list[str]], dict]) -> tuple[Dataset, list[str], dict]:
    """The dataset at ``requested``, or (None) at the version an unfinished run of the same settings planned on,
    or at the latest; with the run's settings (``settings_of`` puts the version read in them)."""
    ds, hooks = open_at(requested)
    settings = settings_of(ds, hooks)
    if requested is None:
        planned = rundir.unfinished_version(settings)
        if planned is not None and planned != ds.version:
            log.info("%s: resuming on version %d, the version the run planned on (the dataset is now at version %d)",
                     rundir.storage.display(), planned, ds.version)
            ds, hooks = open_at(planned)
            settings = settings_of(ds, hooks)
    return ds, hooks, settings


def start_run(cfg, neutral: frozenset[str], *, command: str, summary: str = SUMMARY,
              resume_marker: str | None = RUN, extra: Callable[[Dataset], dict] | None = None) -> StartedRun:
    """Open ``cfg``'s dataset pinned at one version (``cfg``: a ``DataArgs`` with ``out`` and ``overwrite``) and
    the state of ``cfg.out`` for this run of ``command``; ``neutral`` settings stay out of its fingerprint,
    ``extra(dataset)`` adds settings of its own (a second dataset's version)."""
    out = Results(cfg.out, cfg.storage)
    rundir = RunDir(out.storage, summary, resume_marker=resume_marker, command=command)

    def settings_of(ds: Dataset, hooks: list[str]) -> dict:
        return run_settings(cfg, neutral, dataset_id=ds.dataset_id, dataset_version=ds.version, hooks=hooks,
                            **(extra(ds) if extra is not None else {}))

    ds, hooks, settings = pin_dataset(cfg.open, cfg.data_version, rundir, settings_of)
    return StartedRun(ds, hooks, out, rundir, settings, rundir.state(settings, cfg.overwrite))
