"""Incremental extraction of a growing input: one scheduled tick.

A tick lists the job's input (files of a glob or folder on any fsspec URI, or the rows of one growing table),
finds what no earlier tick covered, and extracts only that into new units of the same dataset. Exactly once:

- the tick's plan (its inputs, and the unit and example ids they get) is committed to the manifest as a
  *planned* tick before any unit is written; a tick killed after that is finished by the next tick (or a rerun)
  from that record, never planned again, and its committed units are skipped like any resumed job's;
- ticks of a dataset run one at a time: the dataset's write lock (and the schedule's lease above it);
- unit ids and example ids continue after every earlier tick's, so they stay unique across ticks.

An input that changed after it was extracted (size or ETag differ and its content fingerprint too) is reported
(``--on-changed warn``), stops the tick before any work (``fail``), or is extracted again (``reextract``): the
units holding it, and every other input sharing those units, are dropped and extracted anew.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from typing import Literal

from ingest.config import ExtractConfig
from ingest.corpus import _FORMATS, corpus_fingerprint, fingerprint_like, load_corpus
from ingest.plan import ExtractionPlan, InputSelection
from shards.errors import ActlakeError, ConfigError
from shards.manifest import CommitInfo, InputRecord, Manifest, TickRecord, now_iso, read_manifest
from shards.storage import Storage

log = logging.getLogger("actlake.schedule")
OnChanged = Literal["warn", "fail", "reextract"]
#: settings of a one-off job's identity that describe how much input there was: a growing input changes them
GROWING_KEYS = ("examples", "fingerprint", "ids_sha256")
FINGERPRINT_BYTES = 64 << 10


class ChangedInputError(ActlakeError, RuntimeError):
    """An input changed after it was extracted (``--on-changed fail``), or while its tick was unfinished."""


class ConcurrentTickError(ActlakeError, RuntimeError):
    """Another tick committed to the dataset between this tick's listing and its taking the write lock."""


@dataclass(frozen=True)
class FoundInput:
    """One file of the input as the store lists it."""

    path: str  #: the URI readers open (credentials never in it)
    size: int
    etag: str  #: the store's ETag, or the modification time where there is none


@dataclass(kw_only=True)
class TickResult:
    """What one tick did; the schedule's history records it."""

    tick: str
    status: Literal["extracted", "resumed", "nothing new"]
    inputs_found: int
    new_inputs: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  #: inputs extracted earlier and no longer listed
    units_written: int = 0
    rows: int = 0  #: rows the tick added
    examples: int = 0
    version: int = 0  #: the dataset version after the tick
    seconds: float = 0.0

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


# --- listing -----------------------------------------------------------------------
def _is_glob(path: str) -> bool:
    return any(c in path for c in "*?[")


def input_kind(cfg: ExtractConfig) -> Literal["files", "table"]:
    """``table``: ``data`` is one file whose rows grow; ``files``: a glob or a folder whose files grow."""
    st = Storage(cfg.data, cfg.storage)
    if _is_glob(st.root) or st.is_dir():
        return "files"
    if st.is_file() and st.root.split("?")[0].endswith(tuple(_FORMATS)):
        return "table"
    raise ConfigError(f"scheduled extraction reads a glob of files (s3://bucket/crawl/*.jsonl), a folder, or one "
                      f"table whose rows grow; {cfg.data!r} is none of these (or does not exist yet)")


def _extensions(cfg: ExtractConfig) -> tuple[str, ...]:
    from ingest.image_sources import IMAGE_EXTENSIONS

    return IMAGE_EXTENSIONS if cfg.modality == "image" else tuple(_FORMATS)


def list_inputs(cfg: ExtractConfig) -> list[FoundInput]:
    """The files of the job's input, sorted by path (a folder: those with the modality's extensions)."""
    st = Storage(cfg.data, cfg.storage)
    if _is_glob(st.root):
        found = st.glob()
    elif st.is_dir():
        found = {p: i for p, i in st.find().items() if p.lower().endswith(_extensions(cfg))}
    else:
        found = {st.root: st.info()}
    out = []
    for path, info in sorted(found.items()):
        if info.get("type") == "directory":
            continue
        etag = info.get("ETag") or info.get("etag") or info.get("mtime") or info.get("LastModified") or ""
        out.append(FoundInput(st.uri_of(path), int(info.get("size") or 0), str(etag).strip('"')))
    return out


def file_fingerprint(cfg: ExtractConfig, path: str, size: int) -> str:
    """xxh3 of the size and the first and last 64 KiB: cheap on files of any size, and it tells a file that was
    only touched (new ETag or mtime, same bytes) from one that changed."""
    import xxhash

    st = Storage(path, cfg.storage)
    h = xxhash.xxh3_64()
    h.update(str(size).encode())
    if size <= 2 * FINGERPRINT_BYTES:
        h.update(st.get_bytes(""))
    else:
        h.update(st.read_range("", 0, FINGERPRINT_BYTES))
        h.update(st.read_range("", size - FINGERPRINT_BYTES, size))
    return h.hexdigest()


# --- what is new -----------------------------------------------------------------------
@dataclass
class TickPlan:
    """What this tick extracts and how its ids continue."""

    inputs: list[FoundInput]  #: files (or the one table) to extract, in order
    rows: tuple[int, int] | None  #: a table's new rows
    changed: list[str]
    missing: list[str]
    drop_units: list[int]  #: units of inputs extracted again (``reextract``)
    table_fingerprint: str = ""  #: a table: the fingerprint of its rows [0, rows[1]) (computed while planning)


def covered_inputs(ticks: list[TickRecord]) -> dict[str, InputRecord]:
    """The latest record of every input that finished ticks cover (a later tick's record of a file wins)."""
    out: dict[str, InputRecord] = {}
    for t in ticks:
        if t.status == "done":
            for rec in t.inputs:
                out[rec.path] = rec
    return out


def _changed_files(cfg: ExtractConfig, listing: list[FoundInput], covered: dict[str, InputRecord]) -> list[str]:
    out = []
    for f in listing:
        rec = covered.get(f.path)
        if rec is not None and (rec.size, rec.etag) != (f.size, f.etag) and \
                file_fingerprint(cfg, f.path, f.size) != rec.fingerprint:
            out.append(f.path)
    return out


def _units_of(manifest: Manifest, recs: list[InputRecord]) -> list[int]:
    """Units holding any example of ``recs``."""
    return sorted(u.id for u in manifest.units if u.example_range is not None and any(
        u.example_range[0] < r.examples[1] and r.examples[0] <= u.example_range[1] for r in recs))


def _reextract_closure(manifest: Manifest, covered: dict[str, InputRecord], changed: list[str]) -> tuple[list[str],
                                                                                                      list[int]]:
    """The inputs to extract again and the units to drop: the changed inputs' units, and every input sharing
    one of those units (its other examples would otherwise be left half in the dataset), until closed."""
    held = {p: set(_units_of(manifest, [r])) for p, r in covered.items()}
    paths = set(changed)
    while True:
        units = set().union(*(held[p] for p in paths))
        more = {p for p, u in held.items() if u & units}
        if more <= paths:
            return sorted(paths), sorted(units)
        paths |= more


def plan_files(cfg: ExtractConfig, listing: list[FoundInput], manifest: Manifest | None,
               on_changed: OnChanged) -> TickPlan:
    covered = covered_inputs(manifest.ticks if manifest else [])
    new = [f for f in listing if f.path not in covered]
    listed = {f.path for f in listing}
    missing = sorted(p for p in covered if p not in listed)
    changed = _changed_files(cfg, listing, covered)
    drop: list[int] = []
    if changed:
        _report_changed(changed, on_changed)
        if on_changed == "reextract" and manifest is not None:
            again, drop = _reextract_closure(manifest, covered, changed)
            by_path = {f.path: f for f in listing}
            new = sorted({*new, *(by_path[p] for p in again if p in by_path)}, key=lambda f: f.path)
    return TickPlan(new, None, changed, missing, drop)


def plan_table(cfg: ExtractConfig, listing: list[FoundInput], manifest: Manifest | None,
               on_changed: OnChanged) -> TickPlan:
    table = listing[0]
    prior = covered_inputs(manifest.ticks if manifest else []).get(table.path)
    if prior is not None and (prior.size, prior.etag) == (table.size, table.etag):
        return TickPlan([], None, [], [], [])
    corpus = load_corpus(table.path, cfg.text_field, cfg.fields, storage_options=cfg.storage, check_text=False)
    start = prior.rows[1] if prior is not None and prior.rows else 0
    if prior is not None and fingerprint_like(prior.fingerprint, corpus.select(range(min(start, len(corpus))))
                                              ) != prior.fingerprint:
        _report_changed([table.path], on_changed)
        if on_changed != "reextract":  # warn: the rows extracted before stay; the new rows are still extracted
            if len(corpus) <= start:
                return TickPlan([], None, [table.path], [], [])
            return TickPlan([table], (start, len(corpus)), [table.path], [], [], corpus_fingerprint(corpus))
        drop = [u.id for u in manifest.units] if manifest else []
        return TickPlan([table], (0, len(corpus)), [table.path], [], drop, corpus_fingerprint(corpus))
    if len(corpus) <= start:
        return TickPlan([], None, [], [], [])
    return TickPlan([table], (start, len(corpus)), [], [], [], corpus_fingerprint(corpus))


def _report_changed(changed: list[str], on_changed: OnChanged) -> None:
    if on_changed == "fail":
        raise ChangedInputError(
            f"{len(changed)} input(s) changed after they were extracted (e.g. {changed[:3]}); nothing was done. "
            "Restore them, or choose what to do with them: --on-changed warn keeps the extracted rows, reextract "
            "replaces them (`actlake extract --on-changed ...`; a schedule's is set when it is added: `actlake "
            "schedule remove NAME` and `schedule add NAME ... --on-changed warn|reextract`).")
    log.warning("%d input(s) changed after they were extracted (%s); %s", len(changed), ", ".join(changed[:3]),
                "extracting them again" if on_changed == "reextract" else "keeping the rows extracted before")


# --- the tick ---------------------------------------------------------------------------
def tick_identity(identity: dict) -> dict:
    """A growing job's identity: the one-off job's, less what grows (example counts, content hashes)."""
    return {**{k: v for k, v in identity.items() if k not in GROWING_KEYS}, "incremental": True}


def _next_ids(manifest: Manifest | None) -> tuple[int, int]:
    """The first unit id and example id no tick and no unit of the dataset has used: from the version's counts
    (format v4 records its largest unit id and next example id: no unit list read per tick, whatever the dataset's
    size), else from its unit list."""
    if manifest is None:
        return 0, 0
    counts = (manifest.root or {}).get("units")
    ticks_units = [t.units[1] for t in manifest.ticks]
    ticks_examples = [t.examples[1] for t in manifest.ticks]
    if isinstance(counts, dict) and "max_id" in counts and "next_example" in counts:
        return (max([*ticks_units, int(counts["max_id"]) + 1], default=0),
                max([*ticks_examples, int(counts["next_example"])], default=0))
    units = ticks_units + [u.id + 1 for u in manifest.units]
    examples = ticks_examples + [u.example_range[1] + 1 for u in manifest.units if u.example_range is not None]
    return max(units, default=0), max(examples, default=0)


def _example_counts(cfg: ExtractConfig, plan: ExtractionPlan, tp: TickPlan) -> list[int]:
    """Examples per input, in order (to record which example ids each input became)."""
    if tp.rows is not None:
        return [tp.rows[1] - tp.rows[0]]
    if plan.modality == "image":
        return [1] * len(tp.inputs)
    return [len(load_corpus([f.path], cfg.text_field, None, storage_options=cfg.storage, check_text=False))
            for f in tp.inputs]


def _records(cfg: ExtractConfig, plan: ExtractionPlan, tp: TickPlan, example_base: int) -> list[InputRecord]:
    counts = _example_counts(cfg, plan, tp)
    if sum(counts) != plan.num_examples:
        raise ChangedInputError(f"the inputs hold {sum(counts)} examples now, {plan.num_examples} when planned: "
                                "they are changing while the tick reads them; run the tick again")
    out, start = [], example_base
    for f, n in zip(tp.inputs, counts, strict=True):
        fp = tp.table_fingerprint if tp.rows is not None else file_fingerprint(cfg, f.path, f.size)
        out.append(InputRecord(f.path, f.size, f.etag, fp, (start, start + n), tp.rows))
        start += n
    return out


ABANDON_HINT = ("restore it, or run `actlake schedule run NAME --abandon-planned` (Python: run_tick(..., "
                "abandon_planned=True)): the unfinished tick's committed units are dropped and the next tick plans "
                "again from what the inputs hold now")


def _fingerprint_now(cfg: ExtractConfig, rec: InputRecord) -> str:
    """The fingerprint of what the input holds now, computed as its plan computed it: a file's (size, head and
    tail), a table's rows [0, planned end)."""
    if rec.rows is None:
        return file_fingerprint(cfg, rec.path, int(Storage(rec.path, cfg.storage).info().get("size") or 0))
    corpus = load_corpus(rec.path, cfg.text_field, cfg.fields, storage_options=cfg.storage, check_text=False)
    return fingerprint_like(rec.fingerprint, corpus.select(range(min(rec.rows[1], len(corpus)))))


def _check_unchanged(cfg: ExtractConfig, tick: TickRecord) -> None:
    """A planned tick is finished only over the inputs it planned, as they were: one that is gone or whose content
    changed since (same size or not) is refused, or a resumed tick would mix an input's old and new rows."""
    for rec in tick.inputs:
        try:
            now = _fingerprint_now(cfg, rec)
        except FileNotFoundError:
            raise ChangedInputError(f"{rec.path}, an input of tick {tick.tick}, is gone while the tick is unfinished; "
                                    f"{ABANDON_HINT}") from None
        if now != rec.fingerprint:
            raise ChangedInputError(f"{rec.path} changed while tick {tick.tick} was unfinished (its content "
                                    f"fingerprint is {now}, planned {rec.fingerprint}); {ABANDON_HINT}")


def _abandon(cfg: ExtractConfig, out: Storage, tick: TickRecord, schedule: str) -> None:
    """Drop an unfinished tick's committed units and mark it abandoned: its inputs count as never extracted."""
    import shards

    m = read_manifest(out)
    writer = shards.create_dataset(cfg.out, dict(m.schema.hooks), columns=dict(m.schema.columns), mode="append",
                                   storage_options=cfg.storage,
                                   commit_info=CommitInfo(operation="abandon", job=f"schedule {schedule}",
                                                          tick=tick.tick))
    try:
        writer.drop_units([u for u in writer.committed_units if tick.units[0] <= u < tick.units[1]])
        writer.abandon_tick(tick.tick)
        writer.close()
    except BaseException:
        writer.abort()
        raise
    log.warning("abandoned tick %s of %s: its committed units were dropped; its inputs are planned again",
                tick.tick, out.display())


def _what_to_run(cfg: ExtractConfig, kind: str, listing: list[FoundInput], manifest: Manifest | None,
                 pending: TickRecord | None, on_changed: OnChanged) -> tuple[TickPlan, str, int, int]:
    """An unfinished tick's plan (finished first, never planned again), else what is new: (plan, tick id, first
    unit id, first example id)."""
    if pending is not None:
        log.info("finishing tick %s, which did not finish (%d inputs)", pending.tick, len(pending.inputs))
        _check_unchanged(cfg, pending)
        rows = pending.inputs[0].rows if pending.inputs and pending.inputs[0].rows else None
        tp = TickPlan([FoundInput(r.path, r.size, r.etag) for r in pending.inputs], rows, list(pending.changed), [],
                      [])
        return tp, pending.tick, pending.units[0], pending.examples[0]
    tp = (plan_table if kind == "table" else plan_files)(cfg, listing, manifest, on_changed)
    return (tp, f"t{len(manifest.ticks if manifest else []) + 1:06d}", *_next_ids(manifest))


def _nothing_new(listing: list[FoundInput], tp: TickPlan, manifest: Manifest | None, t0: float) -> TickResult:
    log.info("nothing new: %d inputs listed, all extracted by earlier ticks", len(listing))
    return TickResult(tick="", status="nothing new", inputs_found=len(listing), changed=tp.changed,
                      missing=tp.missing, version=manifest.version if manifest else 0,
                      seconds=round(time.perf_counter() - t0, 2))


def _plan_tick(cfg: ExtractConfig, tp: TickPlan, pending: TickRecord | None, unit_base: int, example_base: int,
               resolver=None) -> tuple[ExtractionPlan, list[InputRecord]]:
    """The extraction plan of this tick's inputs, its ids continuing the earlier ticks', and each input's record."""
    from ingest.driver import plan_extraction

    selection = InputSelection(rows=tp.rows) if tp.rows else InputSelection(files=tuple(f.path for f in tp.inputs))
    plan = plan_extraction(cfg, selection, resolver)
    plan.identity = tick_identity({**plan.identity, "data": cfg.data})
    plan.unit_base, plan.example_base = unit_base, example_base
    records = _records(cfg, plan, tp, example_base) if pending is None else list(pending.inputs)
    return plan, records


def _extract_tick(plan: ExtractionPlan, writer, tp: TickPlan, record: TickRecord, pending: TickRecord | None,
                  seen: list[TickRecord]) -> tuple[list, int]:
    """Record the tick's plan (a new tick), extract its units and mark it done: (units written, rows before)."""
    from ingest.driver import extract_units

    if [(t.tick, t.status) for t in writer.ticks] != [(t.tick, t.status) for t in seen]:
        raise ConcurrentTickError(f"another tick committed to {writer.storage.display()} while this one was "
                                  "planning; run the tick again (it will see what the other one extracted)")
    if pending is None:
        if tp.drop_units:
            writer.drop_units(tp.drop_units)
        writer.plan_tick(record)  # durable before any unit is written: a killed tick is finished, not replanned
    rows_before = writer.manifest.num_rows  # from the running totals: no unit list read per tick
    todo, _count, _startup = extract_units(plan, writer, plan.units(), record.tick)
    writer.finish_tick(record.tick)
    return todo, rows_before


def run_tick(cfg: ExtractConfig, schedule: str = "", on_changed: OnChanged = "warn",
             abandon_planned: bool = False, resolver=None) -> TickResult:
    """Run one tick of ``cfg`` (its ``data`` a glob, a folder or a growing table; ``out`` the growing dataset).
    ``abandon_planned``: an unfinished tick is abandoned (its units dropped) instead of finished, and what is new
    is planned again (the way out when one of its inputs is gone or changed). ``resolver`` builds the job's
    ``--intervene`` specs (see ``ingest.driver.plan_extraction``).

    Example::

        run_tick(ExtractConfig(data="s3://bucket/crawl/*.jsonl", out="s3://bucket/acts/crawl"), "nightly")
    """
    from ingest.driver import open_output

    if cfg.overwrite or cfg.max_examples:
        raise ConfigError("a scheduled tick appends what is new: its job file cannot set overwrite or max_examples")
    t0 = time.perf_counter()
    kind, listing = input_kind(cfg), list_inputs(cfg)
    out = Storage(cfg.out, cfg.storage)
    manifest = read_manifest(out, lazy=True) if out.exists("manifest.json") else None
    seen = list(manifest.ticks) if manifest else []
    pending = next((t for t in seen if t.status == "planned"), None)
    if pending is not None and abandon_planned:
        _abandon(cfg, out, pending, schedule)
        manifest = read_manifest(out, lazy=True)
        seen, pending = list(manifest.ticks), None
    tp, tick_id, unit_base, example_base = _what_to_run(cfg, kind, listing, manifest, pending, on_changed)
    if not tp.inputs:
        return _nothing_new(listing, tp, manifest, t0)
    plan, records = _plan_tick(cfg, tp, pending, unit_base, example_base, resolver)
    record = pending or TickRecord(tick=tick_id, schedule=schedule, status="planned", planned=now_iso(),
                                   inputs=tuple(records), units=(unit_base, unit_base + len(plan.units())),
                                   examples=(example_base, example_base + plan.num_examples),
                                   changed=tuple(tp.changed))
    writer = open_output(plan, CommitInfo(operation="tick", job=f"schedule {schedule}" if schedule else "tick",
                                          tick=tick_id))
    try:
        todo, rows_before = _extract_tick(plan, writer, tp, record, pending, seen)
        writer.close()
    except BaseException:
        writer.abort()
        raise
    after = read_manifest(out, lazy=True)
    return TickResult(tick=tick_id, status="resumed" if pending else "extracted", inputs_found=len(listing),
                      new_inputs=[r.path for r in records], changed=list(tp.changed), missing=tp.missing,
                      units_written=len(todo), rows=after.num_rows - rows_before, examples=plan.num_examples,
                      version=after.version, seconds=round(time.perf_counter() - t0, 2))
