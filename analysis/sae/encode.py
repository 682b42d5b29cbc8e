"""``actlake sae encode``: a trained SAE over a dataset, into a sparse latent dataset (per row the top latent
ids and values, same ids and metadata as the source, one unit per source unit) and a table of each latent's
top-activating rows (with token contexts for text, stimulus ids for images)."""

from __future__ import annotations

import io
import json
import logging
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from analysis.sae.config import SaeEncodeConfig
from analysis.sae.io import load_sae
from shards.dtypes import storage_to_torch
from shards.errors import ActlakeError
from shards.reader import decode_tensor
from shards.storage import Storage

log = logging.getLogger("actlake.sae")


class SaeEncodeError(ActlakeError, ValueError):
    """The SAE does not fit the dataset."""


def _tokenizer_for(ds):
    """The tokenizer of the model that made the dataset, if it loads offline (for readable contexts)."""
    path = ((ds.manifest.get("provenance") or {}).get("model") or {}).get("path")
    if not path:
        return None
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(path)
    except Exception:  # noqa: BLE001 - contexts fall back to token ids
        return None


@torch.no_grad()
def encode_dataset(cfg: SaeEncodeConfig) -> dict:
    """Encode ``cfg.data`` with the SAE at ``cfg.sae``; returns a summary.

    Example::

        encode_dataset(SaeEncodeConfig(sae="runs/minilm-topk", data="demo-data/minilm", out="runs/latents"))
    """
    import shards

    t0 = time.perf_counter()
    so = cfg.storage_options()
    sae = load_sae(cfg.sae, so)
    trained_on = (sae.loaded_cfg.get("actlake") or {}).get("hook")
    hook = cfg.hook or trained_on
    ds = shards.open_dataset(cfg.data, so)
    if hook not in ds.hooks:
        raise SaeEncodeError(f"hook {hook!r} not in {ds.storage.display()}; it has {ds.hooks}")
    d_in = int(np.prod(ds.hook_spec(hook).shape))
    if d_in != sae.d_in:
        raise SaeEncodeError(f"the SAE takes {sae.d_in}-dim inputs but hook {hook!r} is {d_in}-dim")
    m = cfg.top_latents or sae.k or 64
    m = min(m, sae.d_sae)
    meta_cols = [c for c in ds.columns if c not in ("example_id", "position", "token_id")]
    columns = {c: t for c, t in ds.schema.columns.items() if c in meta_cols}
    hooks = {"latent_values": {"shape": [m], "dtype": "float32"}, "latent_ids": {"shape": [m], "dtype": "int32"}}
    provenance = {"sae": {"uri": Storage(cfg.sae, so).display(), "arch": sae.arch, "d_sae": sae.d_sae, "k": sae.k},
                  "source": {"uri": ds.storage.display(), "id": ds.manifest.get("id"), "hook": hook}}
    writer = shards.create_dataset(cfg.out, hooks, columns=columns, mode="overwrite" if cfg.overwrite else "create",
                                   provenance=provenance, storage_options=so)
    wanted_cols = {"example_id", "position", "token_id", *meta_cols}  # other hooks are never read
    n_top = cfg.top_examples
    top_vals = torch.full((sae.d_sae, n_top), -torch.inf)
    top_rows = torch.full((sae.d_sae, n_top), -1, dtype=torch.long)
    fires = torch.zeros(sae.d_sae, dtype=torch.long)
    row0 = 0
    try:
        for ui, unit in enumerate(ds.units):
            table = ds.read_unit_table(ui, [hook, *(c for c in ds.columns if c in wanted_cols)])
            spec = ds.schema.hooks[hook]
            x_all = storage_to_torch(np.ascontiguousarray(decode_tensor(spec, table.column(hook))), spec.dtype).float()
            vals_p, ids_p = [], []
            for b in range(0, len(x_all), cfg.batch_size):
                x = x_all[b:b + cfg.batch_size].reshape(-1, d_in)
                z = sae.encode(x)
                fires += (z != 0).sum(0)
                v, i = z.topk(m, dim=-1)
                i = torch.where(v != 0, i, torch.full_like(i, -1)).to(torch.int32)
                vals_p.append(v)
                ids_p.append(i)
                cand_v = torch.cat([top_vals, z.t()], dim=1)
                cand_r = torch.cat([top_rows, torch.arange(row0 + b, row0 + b + len(x)).expand(sae.d_sae, -1)], 1)
                top_vals, pick = cand_v.topk(n_top, dim=1)
                top_rows = cand_r.gather(1, pick)
            cols = {"latent_values": torch.cat(vals_p), "latent_ids": torch.cat(ids_p)}
            for c in ("example_id", "position", "token_id", *meta_cols):
                if c in table.column_names:
                    col = table.column(c)
                    if c == "token_id":
                        col = pc.fill_null(col, -1)  # null for images and pooled rows
                    cols[c] = np.asarray(col.to_pylist(), dtype=object) if pa.types.is_string(col.type) or \
                        pa.types.is_large_string(col.type) else col.to_numpy(zero_copy_only=False)
            writer.write_unit(unit["id"], cols)
            row0 += len(x_all)
            log.info("encoded unit %d/%d", ui + 1, len(ds.units))
        writer.close()
    except BaseException:
        writer.abort()
        raise
    top = _top_table(ds, top_vals, top_rows, cfg.context)
    out = Storage(cfg.out, so)
    buf = io.BytesIO()
    import pyarrow.parquet as pq

    pq.write_table(top, buf)
    out.put_bytes("top_examples.parquet", buf.getvalue())
    summary = {"out": out.display(), "rows": row0, "top_latents_per_row": m, "latents": sae.d_sae,
               "latents_never_active": int((fires == 0).sum()), "mean_l0": float(fires.sum()) / max(row0, 1),
               "top_examples_rows": top.num_rows, "seconds": round(time.perf_counter() - t0, 2)}
    out.put_bytes("encode_summary.json", json.dumps(summary, indent=1).encode())
    return summary


def _top_table(ds, top_vals: torch.Tensor, top_rows: torch.Tensor, context: int) -> pa.Table:
    """One row per (latent, rank) with the activating row's ids, and its token context for text."""
    keep = torch.isfinite(top_vals) & (top_vals > 0)
    lat, rank = keep.nonzero(as_tuple=True)
    rows = top_rows[lat, rank].numpy()
    want = [c for c in ("example_id", "position", "token_id", "stimulus_id") if c in ds.columns]
    uniq, inv = np.unique(rows, return_inverse=True)
    meta = ds.take(uniq, hooks=[], columns=want) if len(uniq) else {}
    data = {"latent": lat.numpy().astype(np.int32), "rank": rank.numpy().astype(np.int32),
            "activation": top_vals[lat, rank].numpy().astype(np.float32), "row": rows}
    for c in want:
        v = meta[c]
        arr = np.asarray(v.numpy() if isinstance(v, torch.Tensor) else v, dtype=object if c == "stimulus_id" else None)
        data[c] = arr[inv]
    has_tokens = "token_id" in want and len(uniq) and bool((np.asarray(meta["token_id"]) >= 0).any())
    if has_tokens and context > 0:
        data["context"] = _contexts(ds, uniq, context)[inv]
    return pa.table(data)


def _contexts(ds, rows: np.ndarray, context: int) -> np.ndarray:
    """For each row: the tokens of its example within ``context`` positions, the row's own token marked."""
    tok = _tokenizer_for(ds)
    lo = np.clip(rows - context, 0, ds.num_rows - 1)
    hi = np.clip(rows + context, 0, ds.num_rows - 1)
    spans = sorted({int(r) for a, b in zip(lo, hi, strict=True) for r in range(a, b + 1)})
    got = ds.take(spans, hooks=[], columns=["example_id", "token_id"])
    where = {r: i for i, r in enumerate(spans)}
    ex = got["example_id"].numpy()
    ids = got["token_id"].numpy()
    out = []
    for r, a, b in zip(rows, lo, hi, strict=True):
        own = ex[where[int(r)]]
        parts = []
        for q in range(int(a), int(b) + 1):
            i = where[q]
            if ex[i] != own or ids[i] < 0:
                continue
            text = tok.convert_ids_to_tokens(int(ids[i])) if tok is not None else str(int(ids[i]))
            parts.append(f"[[{text}]]" if q == r else text)
        out.append(" ".join(parts))
    return np.asarray(out, dtype=object)
