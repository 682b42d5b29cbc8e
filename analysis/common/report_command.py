"""``actlake report --out RUN``: (re)write ``report.html`` for a finished run, e.g. one made before runs wrote
their own page. Every run written by ``RunDir.finish`` already has it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from analysis.common.report_files import REPORT, write_report
from analysis.common.rundir import RUN, RunRecord
from shards.errors import ActlakeError
from shards.records import JsonRecord
from shards.storage import Storage, StorageOptions

SUMMARIES = ("summary.json", "training_summary.json")


class ReportError(ActlakeError, ValueError):
    """The folder holds no finished run."""


@dataclass
class ReportConfig:
    """Write report.html for the finished analysis run at --out."""

    out: str
    """The run's output folder (a local folder or s3:// prefix holding run.json and its summary)."""
    storage: StorageOptions = field(default_factory=StorageOptions)
    """Storage options for --out."""


@dataclass
class ReportSummary(JsonRecord):
    report: str
    command: str
    files: int


def run(cfg: ReportConfig) -> ReportSummary:
    """Read the run's ``run.json`` and summary, write its page, and list the page among the run's files."""
    st = Storage(cfg.out, cfg.storage)
    if not st.exists(RUN):
        raise ReportError(f"{st.display()} holds no run.json: point --out at the folder of an analysis run "
                          "(probe, stats, align *, sae train)")
    record = RunRecord.from_json(json.loads(st.get_bytes(RUN)))
    summary_name = next((s for s in SUMMARIES if st.exists(s)), None)
    if summary_name is None:
        raise ReportError(f"the run at {st.display()} has not finished (no {' or '.join(SUMMARIES)}): rerun its "
                          "command to finish it; the page is written when it does")
    files = record.files or sorted(r for r in (st.rel(p) for p in st.find()) if r)
    files = [f for f in files if f not in (summary_name, REPORT) and f not in record.preexisting]
    if not write_report(st, record.command, json.loads(st.get_bytes(summary_name)), files):
        raise ReportError(f"report.html could not be written for {st.display()} (the log says why)")
    if REPORT not in record.files:
        record.files = sorted({*record.files, REPORT})
        st.put_bytes(RUN, json.dumps(record.to_json(), indent=1).encode())
    return ReportSummary(report=st.display(REPORT), command=record.command, files=len(files))


CONFIG = ReportConfig
