"""Turning a unit of text examples into dataset rows: tokenise, pack or truncate (``prepare``, no model), then
forward, select and pool (``forward``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ingest.capture import capture_with_output
from ingest.columns import RESERVED
from ingest.hooks import HookPoint
from ingest.inloop import ModelInLoop, concat_columns, head_on_real_tokens
from ingest.interventions import intervening
from shards.columns import CONTEXT_ID, CONTEXT_POSITION, EXAMPLE_ID, POSITION, TOKEN_ID
from shards.dtypes import get_dtype
from shards.schema import column_type_of_arrow


def metadata_columns(features, text_field: str, fields: list[str]) -> dict[str, str]:
    """Metadata columns to carry, with their types: the given fields, or every scalar field but the text."""
    out = {}
    for name in fields or [n for n in features if n != text_field]:
        pa_type = getattr(features[name], "pa_type", None)
        typ = column_type_of_arrow(pa_type) if pa_type is not None else None
        if typ is not None:
            out[name] = typ
        elif fields:
            raise ValueError(f"corpus field {name!r} has type {features[name]}; only scalar fields can be carried")
    return {n: t for n, t in out.items() if n not in RESERVED}


@dataclass
class Context:
    """One model input and, per token, where it came from."""

    input_ids: list[int]
    example_id: list[int]
    position: list[int]  #: index of the token in its example's tokenised sequence; -1 for inserted tokens
    special: list[bool]

    def push(self, token: int, example: int, position: int, special: bool) -> None:
        self.input_ids.append(token)
        self.example_id.append(example)
        self.position.append(position)
        self.special.append(special)


@dataclass
class TextBatch:
    """One forward pass: padded inputs, which tokens are stored, and each token's example and position."""

    inputs: dict[str, torch.Tensor]
    keep: torch.Tensor  #: (B, T) bool: real tokens (special ones left out with exclude_special)
    example_id: torch.Tensor
    position: torch.Tensor
    first_context: int  #: context id of the batch's first row (packed text)

    @property
    def tokens(self) -> int:
        return int(self.inputs["attention_mask"].sum())


class TextExtractor:
    """Extraction of one unit of text examples with a loaded model (runs inside an actor)."""

    def __init__(self, *, model, tokenizer, hooks: list[HookPoint], context_size: int, pack: bool, pool: str,
                 exclude_special: bool, dtype: str, batch_size: int, in_loop: ModelInLoop | None = None) -> None:
        self.model, self.tok, self.hooks = model, tokenizer, hooks
        self.in_loop = in_loop or ModelInLoop()
        #: comparison passes start from the main pass's blocks before the hook (``ingest/prefix.py``)
        self.reuse = self.in_loop.prefix_reuse(model)
        self.context_size, self.pack, self.pool = context_size, pack, pool
        self.exclude_special, self.batch_size = exclude_special, batch_size
        self.stored = get_dtype(dtype).torch
        self.device = next(model.parameters()).device
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    # --- tokenisation (no model) -------------------------------------------------------
    def contexts(self, texts: list[str], example_ids: np.ndarray) -> list[Context]:
        if not self.pack:
            enc = self.tok(texts, truncation=True, max_length=self.context_size, return_special_tokens_mask=True)
            return [Context(ids, [int(e)] * len(ids), list(range(len(ids))), [bool(s) for s in sm])
                    for ids, sm, e in zip(enc["input_ids"], enc["special_tokens_mask"], example_ids, strict=True)]
        return self._packed(texts, example_ids)

    def _packed(self, texts: list[str], example_ids: np.ndarray) -> list[Context]:
        """Examples back to back in full contexts, each context opened by BOS (or CLS), examples closed by
        EOS (or SEP)."""
        bos = self.tok.bos_token_id if self.tok.bos_token_id is not None else self.tok.cls_token_id
        sep = self.tok.eos_token_id if self.tok.eos_token_id is not None else self.tok.sep_token_id
        out: list[Context] = []
        cur = Context([], [], [], [])

        def push(tid: int, ex: int, pos: int, special: bool) -> None:
            nonlocal cur
            if len(cur.input_ids) == self.context_size:
                out.append(cur)
                cur = Context([], [], [], [])
            if not cur.input_ids and bos is not None and not (special and tid == bos):
                cur.push(bos, ex, -1, True)
            cur.push(tid, ex, pos, special)

        for ids, e in zip(self.tok(texts, add_special_tokens=False)["input_ids"], example_ids, strict=True):
            for j, tid in enumerate(ids):
                push(tid, int(e), j, False)
            if sep is not None:
                push(sep, int(e), -1, True)
        return out + ([cur] if cur.input_ids else [])

    def _batch(self, batch: list[Context], first_context: int) -> TextBatch:
        shape = (len(batch), max(len(c.input_ids) for c in batch))
        ids = torch.full(shape, self.pad_id, dtype=torch.long)
        mask, special = torch.zeros(shape, dtype=torch.bool), torch.zeros(shape, dtype=torch.bool)
        ex, pos = torch.full(shape, -1, dtype=torch.long), torch.full(shape, -1, dtype=torch.int32)
        for i, c in enumerate(batch):
            n = len(c.input_ids)
            ids[i, :n], mask[i, :n], special[i, :n] = torch.tensor(c.input_ids), True, torch.tensor(c.special)
            ex[i, :n], pos[i, :n] = torch.tensor(c.example_id), torch.tensor(c.position, dtype=torch.int32)
        keep = mask & ~special if self.exclude_special else mask
        return TextBatch({"input_ids": ids, "attention_mask": mask.long()}, keep, ex, pos, first_context)

    def prepare(self, texts: list[str], example_ids: np.ndarray) -> list[TextBatch]:
        """Tokenised, packed or truncated, padded batches: all the work before the model."""
        ctxs = self.contexts(texts, example_ids)
        return [self._batch(ctxs[b:b + self.batch_size], b) for b in range(0, len(ctxs), self.batch_size)]

    # --- forward and rows ----------------------------------------------------------------
    def forward(self, batches: list[TextBatch], example_ids: np.ndarray, meta: dict[str, list]) -> tuple[dict, int]:
        """Columns of the unit's rows (hook tensors in the stored dtype) and the number of tokens run."""
        parts: dict[str, list] = {h.name: [] for h in self.hooks}
        extra: dict[str, list] = {}
        loop = self.in_loop
        for batch in batches:
            inputs = {k: v.to(self.device) for k, v in batch.inputs.items()}
            with (intervening(self.model, loop.interventions), self.reuse.recording(),
                  head_on_real_tokens(self.model, inputs["attention_mask"], loop.measure == "loss")):
                acts, out = capture_with_output(self.model, self.hooks, inputs, stop_early=not loop.needs_output)
            rows = self._rows(acts, batch.keep) if self.pool == "none" else self._pool(acts, batch.keep)
            for name, r in rows.items():
                parts[name].append(r.to("cpu", self.stored))
            for name, col in self._row_columns(batch).items():
                extra.setdefault(name, []).append(col.numpy())
            if loop.needs_output:
                for name, col in loop.token_columns(self.model, inputs, out, batch.keep, self.reuse).items():
                    extra.setdefault(name, []).append(col)
        cols: dict = {name: torch.cat(p) for name, p in parts.items()}
        cols.update(concat_columns(extra))
        index_of = {int(e): i for i, e in enumerate(example_ids)}
        rows_of = np.fromiter((index_of[int(e)] for e in cols[EXAMPLE_ID]), dtype=np.int64,
                              count=len(cols[EXAMPLE_ID]))
        for name, values in meta.items():
            cols[name] = np.asarray(values, dtype=object if isinstance(values[0], str) else None)[rows_of]
        return cols, sum(b.tokens for b in batches)

    def run(self, texts: list[str], example_ids: np.ndarray, meta: dict[str, list]) -> tuple[dict, int]:
        """``prepare`` then ``forward``: one unit's columns and its token count."""
        return self.forward(self.prepare(texts, example_ids), example_ids, meta)

    def _row_columns(self, batch: TextBatch) -> dict[str, torch.Tensor]:
        """example_id (and for token rows position, token_id, packed contexts) of the rows a batch gives."""
        keep = batch.keep
        if self.pool != "none":
            return {EXAMPLE_ID: batch.example_id[:, 0]}
        out = {EXAMPLE_ID: batch.example_id[keep], POSITION: batch.position[keep],
               TOKEN_ID: batch.inputs["input_ids"][keep].to(torch.int32)}
        if self.pack:
            rows = torch.arange(batch.first_context, batch.first_context + keep.shape[0])
            out[CONTEXT_ID] = rows.unsqueeze(1).expand_as(keep)[keep]
            out[CONTEXT_POSITION] = torch.arange(keep.shape[1], dtype=torch.int32).expand_as(keep)[keep]
        return out

    @staticmethod
    def _rows(acts: dict, keep: torch.Tensor) -> dict:
        return {name: a[keep.to(a.device)] for name, a in acts.items()}

    def _pool(self, acts: dict, keep: torch.Tensor) -> dict:
        out = {}
        for name, a in acts.items():
            k = keep.to(a.device)
            if self.pool == "mean":
                w = k.unsqueeze(-1).to(torch.float32)
                out[name] = (a.float() * w).sum(1) / w.sum(1).clamp(min=1)
            else:
                t = torch.arange(k.shape[1], device=a.device).expand_as(k)
                idx = torch.where(k, t, -1).amax(1) if self.pool == "last" else torch.where(k, t, k.shape[1]).amin(1)
                out[name] = a[torch.arange(a.shape[0], device=a.device), idx]
        return out
