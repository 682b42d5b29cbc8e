"""Turning a unit of text examples into dataset rows: tokenise, pack or truncate, forward, select, pool."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ingest.capture import capture
from ingest.hooks import HookPoint

_STORED = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
_VALUE_TYPES = {"string": "string", "large_string": "string", "int64": "int64", "int32": "int32",
                "int16": "int16", "int8": "int8", "float64": "float64", "float32": "float32", "bool": "bool"}


def metadata_columns(features, text_field: str, fields: list[str]) -> dict[str, str]:
    """Metadata columns to carry, with their types: the given fields, or every scalar field but the text."""
    out = {}
    names = fields or [n for n in features if n != text_field]
    for name in names:
        dtype = getattr(features[name], "dtype", None)
        if dtype in _VALUE_TYPES:
            out[name] = _VALUE_TYPES[dtype]
        elif fields:
            raise ValueError(f"corpus field {name!r} has type {features[name]}; only scalar fields can be carried")
    for reserved in ("example_id", "position", "token_id", "context_id", "context_position"):
        out.pop(reserved, None)
    return out


@dataclass
class Context:
    """One model input and, per token, where it came from."""

    input_ids: list[int]
    example_id: list[int]
    position: list[int]  #: index of the token in its example's tokenised sequence; -1 for inserted tokens
    special: list[bool]


class TextExtractor:
    """Extraction of one unit of text examples with a loaded model (runs inside an actor)."""

    def __init__(self, model, tokenizer, hooks: list[HookPoint], context_size: int, pack: bool, pool: str,
                 exclude_special: bool, dtype: str, batch_size: int) -> None:
        self.model, self.tok, self.hooks = model, tokenizer, hooks
        self.context_size, self.pack, self.pool = context_size, pack, pool
        self.exclude_special, self.dtype, self.batch_size = exclude_special, dtype, batch_size
        self.device = next(model.parameters()).device
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    # --- tokenisation -----------------------------------------------------------
    def contexts(self, texts: list[str], example_ids: np.ndarray) -> list[Context]:
        if not self.pack:
            enc = self.tok(texts, truncation=True, max_length=self.context_size, return_special_tokens_mask=True)
            return [Context(ids, [int(e)] * len(ids), list(range(len(ids))), [bool(s) for s in sm])
                    for ids, sm, e in zip(enc["input_ids"], enc["special_tokens_mask"], example_ids, strict=True)]
        bos = self.tok.bos_token_id if self.tok.bos_token_id is not None else self.tok.cls_token_id
        sep = self.tok.eos_token_id if self.tok.eos_token_id is not None else self.tok.sep_token_id
        enc = self.tok(texts, add_special_tokens=False)["input_ids"]
        out: list[Context] = []
        cur = Context([], [], [], [])

        def push(tid: int, ex: int, pos: int, special: bool) -> None:
            nonlocal cur
            if len(cur.input_ids) == self.context_size:
                out.append(cur)
                cur = Context([], [], [], [])
            if not cur.input_ids and bos is not None and not (special and tid == bos):
                cur.input_ids.append(bos)
                cur.example_id.append(ex)
                cur.position.append(-1)
                cur.special.append(True)
            cur.input_ids.append(tid)
            cur.example_id.append(ex)
            cur.position.append(pos)
            cur.special.append(special)

        for ids, e in zip(enc, example_ids, strict=True):
            for j, tid in enumerate(ids):
                push(tid, int(e), j, False)
            if sep is not None:
                push(sep, int(e), -1, True)
        if cur.input_ids:
            out.append(cur)
        return out

    # --- forward and rows ---------------------------------------------------------
    def _batch_inputs(self, batch: list[Context]) -> tuple[dict, torch.Tensor]:
        t = max(len(c.input_ids) for c in batch)
        ids = torch.full((len(batch), t), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), t), dtype=torch.long)
        for i, c in enumerate(batch):
            ids[i, :len(c.input_ids)] = torch.tensor(c.input_ids)
            mask[i, :len(c.input_ids)] = 1
        return {"input_ids": ids.to(self.device), "attention_mask": mask.to(self.device)}, mask.bool()

    def run(self, texts: list[str], example_ids: np.ndarray, meta: dict[str, list]) -> tuple[dict, int]:
        """Columns of the unit's rows (hook tensors in the stored dtype) and the number of tokens run."""
        ctxs = self.contexts(texts, example_ids)
        index_of = {int(e): i for i, e in enumerate(example_ids)}
        parts: dict[str, list] = {h.name: [] for h in self.hooks}
        ids_p, pos_p, tok_p, ctx_p, cpos_p = [], [], [], [], []
        n_tokens = 0
        for b0 in range(0, len(ctxs), self.batch_size):
            batch = ctxs[b0:b0 + self.batch_size]
            inputs, mask = self._batch_inputs(batch)
            n_tokens += int(mask.sum())
            acts = capture(self.model, self.hooks, inputs)
            special = torch.zeros_like(mask)
            for i, c in enumerate(batch):
                special[i, :len(c.special)] = torch.tensor(c.special)
            keep = mask & ~special if self.exclude_special else mask
            ex = torch.full(mask.shape, -1, dtype=torch.long)
            pos = torch.full(mask.shape, -1, dtype=torch.int32)
            for i, c in enumerate(batch):
                ex[i, :len(c.example_id)] = torch.tensor(c.example_id)
                pos[i, :len(c.position)] = torch.tensor(c.position, dtype=torch.int32)
            if self.pool == "none":
                for name, a in acts.items():
                    parts[name].append(a[keep.to(a.device)].to("cpu", _STORED[self.dtype]))
                ids_p.append(ex[keep])
                pos_p.append(pos[keep])
                tok_p.append(inputs["input_ids"].cpu()[keep].to(torch.int32))
                if self.pack:
                    ctx_p.append(torch.arange(b0, b0 + len(batch)).unsqueeze(1).expand_as(mask)[keep])
                    cpos_p.append(torch.arange(mask.shape[1], dtype=torch.int32).expand_as(mask)[keep])
            else:
                rows = self._pool(acts, keep)
                for name, r in rows.items():
                    parts[name].append(r.to("cpu", _STORED[self.dtype]))
                ids_p.append(torch.tensor([c.example_id[0] for c in batch]))
        cols: dict = {name: torch.cat(p) for name, p in parts.items()}
        example_id = torch.cat(ids_p).numpy()
        cols["example_id"] = example_id
        if self.pool == "none":
            cols["position"] = torch.cat(pos_p).numpy()
            cols["token_id"] = torch.cat(tok_p).numpy()
            if self.pack:
                cols["context_id"] = torch.cat(ctx_p).numpy()
                cols["context_position"] = torch.cat(cpos_p).numpy()
        rows_of = np.fromiter((index_of[int(e)] for e in example_id), dtype=np.int64, count=len(example_id))
        for name, values in meta.items():
            arr = np.asarray(values, dtype=object if isinstance(values[0], str) else None)
            cols[name] = arr[rows_of]
        return cols, n_tokens

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
