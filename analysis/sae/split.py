"""The held-out evaluation split of ``sae train``: whole examples, never single tokens, so no context leaks.

An example is held out when a hash of its group key falls below ``fraction``. The key is the example's text (its
token-id sequence) by default, so every copy of a repeated text lands on the same side: the built-in corpus holds
8,000 examples but only ~1,600 distinct sentences, and a split by example id alone would evaluate on copies of
training rows. Datasets without token ids (pooled rows, images) are grouped by example id. The split depends only
on the dataset's rows and these settings (not on the seed), so every seed of a sweep evaluates on the same rows.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pyarrow as pa

from shards.columns import EXAMPLE_ID, POSITION, TOKEN_ID
from shards.records import JsonRecord

SALT = b"actlake-sae-eval-split-v1"
SplitGroup = Literal["text", "example"]


@dataclass(kw_only=True)
class EvalSplit(JsonRecord):
    """What was held out (recorded in ``eval_split.json``, ``eval.json`` and the SAE's ``cfg.json``)."""

    fraction: float
    group: str  #: "text" (identical texts together) or "example" (example id); "none" when nothing is held out
    examples: int  #: examples in the dataset
    distinct_texts: int  #: distinct token sequences (= examples when the dataset has no token ids)
    heldout_examples: int
    heldout_rows: int
    train_rows: int
    digest: str  #: sha256 of the sorted held-out example ids: two runs held out the same examples iff equal

    @property
    def repeated(self) -> int:
        """Examples whose text repeats an earlier one."""
        return self.examples - self.distinct_texts


def _unit_hash(keys: list[bytes]) -> np.ndarray:
    """A uniform number in [0, 1) per key (blake2b, salted): the same key always lands on the same side."""
    out = np.empty(len(keys), dtype=np.float64)
    for i, key in enumerate(keys):
        out[i] = int.from_bytes(hashlib.blake2b(key, digest_size=8, key=SALT).digest(), "little") / 2.0**64
    return out


def example_texts(meta: pa.Table) -> tuple[np.ndarray, list[bytes] | None]:
    """(sorted distinct example ids, each example's token-id sequence as bytes, in position order); None for the
    sequences when the rows carry no token ids."""
    ids = meta.column(EXAMPLE_ID).to_numpy()
    tokens = meta.column(TOKEN_ID).fill_null(-1).to_numpy().astype(np.int64)
    uniq, first = np.unique(ids, return_index=True)
    if not (tokens >= 0).any():
        return uniq, None
    pos = meta.column(POSITION).fill_null(-1).to_numpy().astype(np.int64)
    order = np.lexsort((pos, ids))
    bounds = np.searchsorted(ids[order], uniq, side="left").tolist() + [len(ids)]
    seq = tokens[order]
    return uniq, [seq[bounds[i]:bounds[i + 1]].tobytes() for i in range(len(uniq))]


def plan_split(meta: pa.Table, fraction: float, group: SplitGroup = "text") -> tuple[EvalSplit, np.ndarray]:
    """The split of a dataset's rows (``meta``: its example_id, position and token_id columns, in row order):
    the record and the sorted held-out example ids."""
    uniq, texts = example_texts(meta)
    keys = texts if (group == "text" and texts is not None) else [int(i).to_bytes(8, "little", signed=True)
                                                                   for i in uniq]
    distinct = len(set(texts)) if texts is not None else len(uniq)
    held = uniq[_unit_hash(keys) < fraction] if fraction > 0 else uniq[:0]
    n_held_rows = int(np.isin(meta.column(EXAMPLE_ID).to_numpy(), held).sum())
    split = EvalSplit(fraction=fraction, group=group if fraction > 0 else "none", examples=len(uniq),
                      distinct_texts=distinct, heldout_examples=len(held), heldout_rows=n_held_rows,
                      train_rows=meta.num_rows - n_held_rows,
                      digest=hashlib.sha256(np.sort(held).astype("<i8").tobytes()).hexdigest())
    return split, np.sort(held)


def heldout_rows(meta: pa.Table, held: np.ndarray, min_position: int = 0) -> np.ndarray:
    """Global row indices of the held-out examples' rows (those at positions >= ``min_position``)."""
    mask = np.isin(meta.column(EXAMPLE_ID).to_numpy(), held)
    if min_position:
        mask &= meta.column(POSITION).fill_null(-1).to_numpy() >= min_position
    return np.nonzero(mask)[0]
