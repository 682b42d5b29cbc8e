"""SAELens' cached-activations layout, written from a dataset (``actlake export --format saelens``).

What SAELens' ``CacheActivationsRunner`` writes and ``ActivationsStore(cached_activations_path=...)`` reads
(SAELens 6.x): a Hugging Face ``datasets`` folder (``save_to_disk``: ``data-XXXXX-of-YYYYY.arrow``,
``dataset_info.json``, ``state.json``) with one row per context window of ``context_size`` tokens, a column named
by SAELens' ``hook_name`` holding ``Array2D((context_size, d_in), dtype)`` and ``token_ids`` holding
``Sequence(int32, length=context_size)``. SAELens reads the column its config's ``hook_name`` names, checks its
shape against ``context_size`` and ``d_in`` and trains on every token of every row; ``actlake export`` names it
as an actlake SAE's cfg.json names the hook (``blocks.3.hook_resid_post`` for ``resid.3``), so the SAE's config
and the export agree.

Rows are taken in the dataset's row order and cut into windows of ``context_size`` tokens (a packed dataset's
examples are exactly its windows; otherwise consecutive examples are concatenated, as SAELens packs text); the
tokens after the last whole window are left out and counted. ``actlake_export.json`` beside the data records
the source (dataset id, version, hook), the column and why it has that name (``column_note``, also the
``description`` of ``dataset_info.json``) and the counts.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import numpy as np

from shards.columns import TOKEN_ID

log = logging.getLogger("actlake.export")

SIDECAR = "actlake_export.json"


@dataclass
class SaeLensExport:
    """What an export wrote."""

    out: str
    hook: str
    column: str  #: the column name (SAELens' ``hook_name``)
    column_note: str  #: why the column has that name (which hook, which naming)
    context_size: int
    d_in: int
    sequences: int
    tokens: int
    dropped_tokens: int  #: rows after the last whole window
    dtype: str
    source: dict

    def to_json(self) -> dict:
        return asdict(self)


def default_context_size(ds) -> int:
    """The dataset's context size as its provenance records it (extraction's ``packing``), else 128."""
    packing = ds.manifest.provenance.details.get("packing") or {}
    return int(packing.get("context_size") or 128)


def _windows(ds, hook: str, context: int, max_tokens: int | None, dtype: str) -> Iterator[dict]:
    """Rows of ``context`` consecutive tokens: ``{hook: (context, d), "token_ids": (context,)}``."""
    want = ds.num_rows if not max_tokens else min(max_tokens, ds.num_rows)
    usable = want // context * context
    carry_x, carry_t, done = None, None, 0
    for batch in ds.iter_batches(hook, batch_size=max(context * 64, 4096), columns=[TOKEN_ID], dtype=dtype):
        x = np.asarray(batch[hook]).reshape(len(batch[hook]), -1)
        t = np.asarray(batch[TOKEN_ID]).astype(np.int32)
        if carry_x is not None:
            x, t = np.concatenate([carry_x, x]), np.concatenate([carry_t, t])
        take = min(len(x) // context * context, usable - done)
        for s in range(0, take, context):
            yield {"x": x[s:s + context], "token_ids": t[s:s + context]}
        done += take
        carry_x, carry_t = x[take:], t[take:]
        if done >= usable:
            return


def export_saelens(ds, hook: str, out: str, *, context_size: int | None = None, column: str | None = None,
                   column_note: str = "", dtype: str = "float32", max_tokens: int | None = None,
                   shards_count: int | None = None) -> SaeLensExport:
    """Write ``hook`` of ``ds`` (a ``shards.Dataset``) to the local folder ``out`` in SAELens' layout, its
    activation column named ``column`` (default: the hook's name; ``actlake export`` passes SAELens'
    ``hook_name``) and ``column_note`` saying why, recorded in the sidecar and ``dataset_info.json``."""
    from pathlib import Path

    import datasets

    context = int(context_size or default_context_size(ds))
    column_note = column_note or ("the hook's name" if not column or column == hook else "given by the caller")
    column = column or hook
    d_in = int(np.prod(ds.schema.hooks[hook].shape))
    total = ds.num_rows if not max_tokens else min(max_tokens, ds.num_rows)
    sequences = total // context
    if sequences == 0:
        raise ValueError(f"{ds.storage.display()} holds {total} tokens of {hook}: fewer than one window of "
                         f"--context-size {context}; give a smaller --context-size")
    features = datasets.Features({column: datasets.Array2D(shape=(context, d_in), dtype=dtype),
                                  "token_ids": datasets.Sequence(datasets.Value("int32"), length=context)})

    def rows():
        for w in _windows(ds, hook, context, max_tokens, dtype):
            yield {column: w["x"], "token_ids": w["token_ids"]}

    out_path = Path(out)
    if out_path.exists() and any(out_path.iterdir()):
        raise FileExistsError(f"{out} is not empty: SAELens' runner refuses a non-empty cache folder too; "
                              "choose an empty --out")
    tmp = tempfile.mkdtemp(prefix="actlake-saelens-")
    try:
        hf = datasets.Dataset.from_generator(rows, features=features, cache_dir=tmp)
        hf.info.description = (f"actlake export of hook {hook} of {ds.storage.display()} (dataset {ds.dataset_id}, "
                               f"version {ds.version}); column {column}: {column_note}")
        hf.save_to_disk(str(out_path), num_shards=shards_count or max(1, min(64, sequences // 1024)))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    summary = SaeLensExport(
        out=str(out_path), hook=hook, column=column, column_note=column_note, context_size=context, d_in=d_in,
        sequences=sequences, tokens=sequences * context, dropped_tokens=total - sequences * context, dtype=dtype,
        source={"uri": ds.storage.display(), "dataset_id": ds.dataset_id, "version": ds.version,
                "model": ds.manifest.provenance.model.name if ds.manifest.provenance.model else ""})
    (out_path / SIDECAR).write_text(json.dumps(summary.to_json(), indent=1))
    log.info("exported %d windows of %d tokens of %s (column %s) to %s (%d tokens left out)", sequences, context,
             hook, column, out, summary.dropped_tokens)
    return summary
