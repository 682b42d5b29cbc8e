"""Gathering what a finished run wrote into its ``report.html``: ``run.json``, the summary, every PNG and the first
rows of every Parquet table (read through ``Storage``, under its retry; a big table is never read whole)."""

from __future__ import annotations

import json
import logging

import pyarrow.parquet as pq

from analysis.common.report_page import HOOK_COLUMNS, ReportFigure, ReportTable, RunReport, report_html
from shards.storage import Storage

log = logging.getLogger("actlake.analysis")
REPORT = "report.html"
MAX_ROWS = 1000  #: rows of a table the page shows (the Parquet file holds them all)
MAX_JSONL_BYTES = 32 << 20
MAX_FIGURES = 80
MAX_FIGURE_BYTES = 4 << 20


def _table(storage: Storage, rel: str) -> ReportTable:
    with storage.open_input(rel) as f:
        pf = pq.ParquetFile(f)
        batch = next(pf.iter_batches(batch_size=MAX_ROWS), None)
        columns = pf.schema_arrow.names
        rows = [] if batch is None else [list(r.values()) for r in batch.to_pylist()]
        return ReportTable(rel, columns, rows, pf.metadata.num_rows)


def _jsonl_table(storage: Storage, rel: str) -> ReportTable:
    """A JSON-lines file (training metrics) as a table: one column per key, in first-seen order."""
    rows = [json.loads(line) for line in storage.get_bytes(rel).decode().splitlines() if line.strip()]
    columns = list(dict.fromkeys(k for r in rows[:MAX_ROWS] for k in r))
    return ReportTable(rel, columns, [[r.get(c) for c in columns] for r in rows[:MAX_ROWS]], len(rows))


def _summary_tables(summary: dict) -> list[ReportTable]:
    """Sections of the summary that are a record per item (an SAE, a hook, a target) as tables."""
    out = []
    for key, v in summary.items():
        if isinstance(v, dict) and v and all(isinstance(x, dict) for x in v.values()):
            columns = list(dict.fromkeys(c for x in v.values() for c, y in x.items() if not isinstance(y, dict)))
            rows = [[name, *(x.get(c) for c in columns)] for name, x in list(v.items())[:MAX_ROWS]]
            out.append(ReportTable(f"summary: {key}", ["name", *columns], rows, len(v)))
    return out


def _hooks(run: dict, tables: list[ReportTable]) -> list[str]:
    """The dataset's hooks the run read, then any other hook a table names, in first-seen order."""
    seen = dict.fromkeys((run.get("dataset") or {}).get("hooks") or [])
    for t in tables:
        for i, c in enumerate(t.columns):
            if c in HOOK_COLUMNS:
                seen.update(dict.fromkeys(r[i] for r in t.rows if isinstance(r[i], str)))
    return list(seen)


def gather_report(storage: Storage, command: str, summary: dict, files: list[str]) -> RunReport:
    """The run's page contents from the ``files`` it wrote under ``storage``."""
    run = json.loads(storage.get_bytes("run.json")) if storage.exists("run.json") else {}
    tables = [_table(storage, f) for f in files if f.endswith(".parquet")]
    tables += [_jsonl_table(storage, f) for f in files
               if f.endswith(".jsonl") and storage.size(f) <= MAX_JSONL_BYTES]
    tables += _summary_tables(summary)
    figures = []
    for f in [f for f in files if f.endswith(".png")][:MAX_FIGURES]:
        if storage.size(f) <= MAX_FIGURE_BYTES:
            figures.append(ReportFigure(f, storage.get_bytes(f)))
    return RunReport(command=command or run.get("command", ""), where=storage.display(), run=run, summary=summary,
                     tables=tables, figures=figures, files=[f for f in files if f != REPORT],
                     hooks=_hooks(run, tables))


def write_report(storage: Storage, command: str, summary: dict, files: list[str]) -> bool:
    """Write ``report.html`` beside the summary. A page that cannot be drawn is logged, never fails the run: the
    results are already written."""
    try:
        page = report_html(gather_report(storage, command, summary, files))
    except (OSError, ValueError, TypeError, KeyError) as e:  # an unreadable table must not undo a finished run
        log.warning("%s: report.html not written (%s: %s)", storage.display(), type(e).__name__, e)
        return False
    storage.put_bytes(REPORT, page.encode())
    return True
