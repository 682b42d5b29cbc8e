"""Text corpora: local files or saved datasets through HF ``datasets``, and a built-in labelled corpus."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from shards.errors import ActlakeError
from shards.storage import StorageOptions, as_fsspec_options


class CorpusError(ActlakeError, ValueError):
    """The corpus is missing, empty or lacks a field."""


class CorpusChangedError(CorpusError):
    """The corpus a worker reads is not the one the job was planned on (it is being written, or was replaced)."""


_FORMATS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv", ".txt": "text",
            ".text": "text", ".arrow": "arrow"}

#: the built-in corpora: ``builtin:concepts`` (optionally ``builtin:concepts?n=2000&seed=0``) and ``builtin:prose``
BUILTIN_PREFIX = "builtin:"

_CONCEPTS = {
    "animal": ["cat", "dog", "horse", "sparrow", "whale", "tiger", "rabbit", "owl"],
    "food": ["bread", "apple", "soup", "cheese", "rice", "pasta", "cake", "mango"],
    "city": ["Paris", "Tokyo", "Nairobi", "Lima", "Oslo", "Cairo", "Hanoi", "Quito"],
    "emotion": ["joy", "anger", "fear", "sadness", "surprise", "calm", "pride", "shame"],
    "vehicle": ["car", "bicycle", "train", "boat", "plane", "truck", "scooter", "tram"],
}
_TEMPLATES = [
    "The {w} was mentioned again in the morning report.",
    "Yesterday I read a long story about a {w}.",
    "Everyone agreed that the {w} mattered most today.",
    "A short note about the {w} was left on the table.",
    "She kept thinking about the {w} during the whole trip.",
    "In the museum there was an old picture of a {w}.",
]


def builtin_concepts(n: int = 2000, seed: int = 0) -> list[dict]:
    """Templated sentences, each about one concept word, labelled with the concept; deterministic."""
    import numpy as np

    rng = np.random.default_rng(seed)
    labels = sorted(_CONCEPTS)
    rows = []
    for i in range(n):
        label = labels[int(rng.integers(len(labels)))]
        word = _CONCEPTS[label][int(rng.integers(len(_CONCEPTS[label])))]
        sent = _TEMPLATES[int(rng.integers(len(_TEMPLATES)))].format(w=word)
        if rng.random() < 0.5:  # a second sentence of varying length, so lengths differ
            sent += " " + _TEMPLATES[int(rng.integers(len(_TEMPLATES)))].format(w=word)
        rows.append({"text": sent, "label": label, "word": word, "id": f"ex-{i:06d}"})
    return rows


def builtin_prose(n: int = 0, seed: int = 0, words: int = 150, snapshot: int = 1) -> list[dict]:
    """Real English prose from a frozen snapshot (``ingest.prose``; the same documents on every machine): ``n``
    documents (0: all) of at most ``words`` words, in a seeded order (a longer draw starts with a shorter one's
    documents)."""
    import numpy as np

    from ingest.prose import fingerprint, prose_documents

    docs = prose_documents(words, snapshot)
    order = np.random.default_rng(seed).permutation(len(docs))
    picked = [docs[i] for i in order[: n or len(docs)]]
    fp = fingerprint(docs)
    for d in picked:
        d["corpus_fingerprint"] = fp[:16]
    return picked


#: built-in corpora by name: their row function and parameters with defaults
BUILTINS = {"concepts": (builtin_concepts, {"n": 2000, "seed": 0}),
            "prose": (builtin_prose, {"n": 0, "seed": 0, "words": 150, "snapshot": 1})}


def parse_builtin(spec: str) -> dict:
    """``builtin:concepts?n=2000&seed=0`` -> {"n": 2000, "seed": 0}; CorpusError naming what is wrong."""
    name, _, query = spec[len(BUILTIN_PREFIX):].partition("?")
    if name not in BUILTINS:
        raise CorpusError(f"unknown built-in corpus {name!r}; available: "
                          f"{', '.join(BUILTIN_PREFIX + b for b in BUILTINS)}")
    out = dict(BUILTINS[name][1])
    for part in filter(None, query.split("&")):
        key, _, value = part.partition("=")
        if key not in out:
            raise CorpusError(f"{spec!r}: unknown parameter {key!r}; builtin:{name} takes {' and '.join(out)}")
        try:
            out[key] = int(value)
        except ValueError:
            raise CorpusError(f"{spec!r}: {part} is not an integer, e.g. builtin:concepts?n=2000&seed=0") from None
    if out["n"] < 0 or (name == "concepts" and out["n"] == 0):
        raise CorpusError(f"{spec!r}: n must be positive")
    if name == "prose" and out["words"] < 12:  # a document is at least one kept paragraph's sentence
        raise CorpusError(f"{spec!r}: words must be at least 12 (documents hold whole prose paragraphs)")
    return out


def builtin_spec(spec: str, **changes: int) -> str:
    """``spec`` with some parameters changed, every other kept as given (``builtin:prose?words=80`` with n=200 ->
    ``builtin:prose?words=80&n=200``): a longer draw of the same corpus."""
    name, _, query = spec.partition("?")
    given = dict(part.partition("=")[::2] for part in filter(None, query.split("&")))
    given.update({k: str(v) for k, v in changes.items()})
    return f"{name}?{'&'.join(f'{k}={v}' for k, v in given.items())}"


def corpus_provenance(data: str | list[str]) -> dict:
    """What a dataset records of its corpus beyond source and fingerprint: for ``builtin:prose``, the snapshot (id,
    pinned versions, file list digest, a checksum per source), so two datasets tell whether they read the same
    documents."""
    if isinstance(data, str) and data.startswith(BUILTIN_PREFIX + "prose"):
        from ingest.prose import load_snapshot

        return {"snapshot": load_snapshot(parse_builtin(data)["snapshot"]).provenance()}
    return {}


def builtin_rows(spec: str) -> list[dict]:
    """The rows of a built-in corpus spec."""
    return BUILTINS[spec[len(BUILTIN_PREFIX):].partition("?")[0]][0](**parse_builtin(spec))


def load_corpus(data: str | list[str], text_field: str = "text", fields: list[str] | None = None, split: str = "train",
                storage_options: StorageOptions | dict | None = None, check_text: bool = True):
    """A ``datasets.Dataset`` for ``data``: builtin:concepts, a file/glob/URI, or a saved dataset folder.

    Checks that it is non-empty and has ``text_field`` (and ``fields``) before any work starts.
    """
    import datasets

    os.environ.setdefault("HF_DATASETS_OFFLINE", "0")
    if isinstance(data, (list, tuple)):  # the files a scheduled tick reads, in this order
        return _check_corpus(_load_files(list(data), storage_options), f"{data[0]} (+{len(data) - 1} more files)",
                             text_field, fields, check_text)
    if data.startswith(BUILTIN_PREFIX):
        ds = datasets.Dataset.from_list(builtin_rows(data))
    elif Path(data).is_dir() and (Path(data) / "dataset_info.json").exists():
        ds = datasets.load_from_disk(data)
        if isinstance(ds, datasets.DatasetDict):
            ds = ds[split]
    else:
        suffix = next((s for s in _FORMATS if data.split("?")[0].endswith(s)), None)
        if suffix is None:
            raise CorpusError(f"cannot tell the format of {data!r}; use a .jsonl, .json, .parquet, .csv or .txt "
                              "file (or a folder saved with datasets' save_to_disk)")
        if "://" not in data and not any(c in data for c in "*?[") and not Path(data).exists():
            raise CorpusError(f"corpus file {data!r} does not exist (looked at {Path(data).resolve()})")
        if Path(data).is_file() and Path(data).stat().st_size == 0:
            raise CorpusError(f"corpus {data!r} is empty: nothing to extract")
        so = as_fsspec_options(storage_options)
        kwargs = {"storage_options": so} if so else {}
        try:
            ds = datasets.load_dataset(_FORMATS[suffix], data_files=data, split="train", **kwargs)
        except FileNotFoundError as exc:
            raise CorpusError(f"corpus {data!r} not found: {exc}") from None
        except (ValueError, StopIteration, datasets.exceptions.DatasetGenerationError) as exc:
            raise CorpusError(f"cannot read corpus {data!r}: {type(exc).__name__}: {exc}") from None
    return _check_corpus(ds, data, text_field, fields, check_text)


def _check_corpus(ds, data: str, text_field: str, fields, check_text: bool):
    if len(ds) == 0:
        raise CorpusError(f"corpus {data!r} is empty: nothing to extract")
    missing = [f for f in [text_field, *(fields or [])] if f not in ds.column_names]
    if missing:
        raise CorpusError(f"corpus {data!r} has no field(s) {missing}; its fields are {ds.column_names}. "
                          "Choose the text with --text-field and metadata with --fields.")
    if check_text:  # the driver checks once, before any work; actors reload the same (fingerprinted) corpus
        check_text_column(ds, text_field, data)
    return ds


def _load_files(files: list[str], storage_options):
    import datasets

    formats = {_FORMATS.get(next((s for s in _FORMATS if f.split("?")[0].endswith(s)), ""), "") for f in files}
    if len(formats) != 1 or "" in formats:
        raise CorpusError(f"the corpus files must share one format (.jsonl, .json, .parquet, .csv or .txt); got "
                          f"{sorted({f.rsplit('.', 1)[-1] for f in files})}")
    so = as_fsspec_options(storage_options)
    try:
        return datasets.load_dataset(formats.pop(), data_files=files, split="train",
                                     **({"storage_options": so} if so else {}))
    except FileNotFoundError as exc:
        raise CorpusError(f"corpus file not found: {exc}") from None
    except (ValueError, StopIteration, datasets.exceptions.DatasetGenerationError) as exc:
        raise CorpusError(f"cannot read corpus files {files[:3]}: {type(exc).__name__}: {exc}") from None


def check_text_column(ds, text_field: str, data: str) -> None:
    """Every row has UTF-8 text in ``text_field``: otherwise a CorpusError naming the first bad row (0-based)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    col = ds.data.column(text_field)
    if col.null_count:
        row = pc.index(pc.is_null(col), True).as_py()
        raise CorpusError(f"corpus {data!r}: row {row} has no {text_field!r} field (or it is null); every row needs "
                          "its text there (choose the field with --text-field)")
    if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
        raise CorpusError(f"corpus {data!r}: field {text_field!r} holds {col.type}, not text")
    offset = 0
    for chunk in col.chunks:
        try:
            chunk.validate(full=True)  # pyarrow's JSON and CSV readers do not check UTF-8 themselves
        except pa.ArrowInvalid:
            for i, raw in enumerate(chunk.cast(pa.binary()).to_pylist()):
                try:
                    raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise CorpusError(f"corpus {data!r}: row {offset + i} is not UTF-8 text ({exc.reason} at byte "
                                      f"{exc.start}); convert the file to UTF-8") from None
        offset += len(chunk)


FULL_PREFIX = "rows:"  #: a fingerprint of every row; one without it (before 2026-12) hashed the head and tail only


def corpus_fingerprint(ds, batch_rows: int = 65_536) -> str:
    """A hash of the corpus' content: every row, in order (``rows:`` and 16 hex digits).

    Content only (unlike HF's fingerprint, which changes when a file is merely touched). Every row, because an edit
    in the middle of a corpus (one text replaced by another of any length) must be seen: a killed job resumed over
    it would mix two corpora. Rows are hashed as Arrow IPC batches of ``batch_rows`` (one in memory at a time; a
    million short texts in about a second), so the cost is one pass over what loading the corpus read anyway."""
    import pyarrow as pa

    h = hashlib.sha256(str(len(ds)).encode())
    if not hasattr(ds, "with_format"):  # a plain list of rows
        h.update(json.dumps(list(ds), sort_keys=True, default=str).encode())
        return FULL_PREFIX + h.hexdigest()[:16]
    for table in ds.with_format("arrow").iter(batch_size=batch_rows):
        sink = pa.BufferOutputStream()
        # the same rows give the same bytes however they are chunked or sliced: concatenating with an empty array
        # copies exactly the rows' values (IPC would write a slice's whole buffers, rows outside it included)
        table = pa.Table.from_arrays([pa.concat_arrays([*c.chunks, pa.array([], type=c.type)]) for c in table.columns],
                                     names=table.column_names)
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        h.update(sink.getvalue())
    return FULL_PREFIX + h.hexdigest()[:16]


def head_tail_fingerprint(ds, sample: int = 64) -> str:
    """The fingerprint datasets recorded before 2026-12 (length, first and last ``sample`` rows): computed only
    to compare with such a recorded one."""
    n = len(ds)
    head, tail = ds[:sample], ds[max(sample, n - sample):]
    return hashlib.sha256(json.dumps([n, head, tail], sort_keys=True, default=str).encode()).hexdigest()[:16]


def fingerprint_like(recorded: str | None, ds) -> str:
    """The corpus' fingerprint computed as ``recorded`` was (every row, or the older head and tail)."""
    return corpus_fingerprint(ds) if not recorded or recorded.startswith(FULL_PREFIX) else head_tail_fingerprint(ds)


def check_unchanged(ds, source, planned_fingerprint: str, planned_rows: int) -> None:
    """A worker's corpus is the planned one: otherwise CorpusChangedError naming the corpus and what changed.

    Every worker raises the same error for the same corpus, so the job stops at once instead of replacing
    workers that would read yet another version of a corpus still being written."""
    now = corpus_fingerprint(ds)
    if now == planned_fingerprint:
        return
    name = source if isinstance(source, str) else f"{source[0]} (+{len(source) - 1} more files)"
    rows = (f"it held {planned_rows} examples when planned and holds {len(ds)} now" if planned_rows and
            planned_rows != len(ds) else f"{len(ds)} examples, but other content")
    raise CorpusChangedError(
        f"corpus {name!r} changed while the job ran: {rows} (content fingerprint {planned_fingerprint} -> {now}). "
        "A corpus that is still being written (files arriving, packages installing into a folder) gives every "
        "worker another corpus; wait until it is complete, or copy it somewhere fixed, then rerun the job")
