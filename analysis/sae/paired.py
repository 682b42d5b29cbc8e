"""Two row-aligned datasets read as one, for model-diffing crosscoders (``sae train --crosscoder --crosscoder-data``):
the same corpus through two models (base and fine-tuned; a random-init control and the trained model), joined on
example id and position.

Two extractions of one corpus with one tokenizer and context size hold the same (example_id, position) in the same
row order, and with the same row groups a seeded shuffle visits both in the same order: the pair is then read as
two iterators in lockstep, with no join at read time. ``check_aligned`` verifies exactly that before any training
(the metadata of every row, and the row-group layout) and otherwise names what differs. The second dataset's hooks
appear as ``other:<hook>``.
"""

from __future__ import annotations

import numpy as np

from analysis.common.finite import require_finite
from shards.columns import EXAMPLE_ID, POSITION
from shards.errors import ConfigError
from shards.reader import Dataset

PREFIX = "other:"


def check_aligned(a: Dataset, b: Dataset) -> None:
    """Refuse two datasets whose rows are not the same (example_id, position) in the same order and row groups."""
    where = f"{a.storage.display()} and {b.storage.display()}"
    if a.num_rows != b.num_rows:
        raise ConfigError(f"--crosscoder-data: {where} hold {a.num_rows} and {b.num_rows} rows; a model-diffing "
                          "crosscoder needs both models run over the same corpus with the same tokenizer and "
                          "--context-size")
    for col in (EXAMPLE_ID, POSITION):
        x = a.metadata_table([col]).column(col).to_numpy(zero_copy_only=False)
        y = b.metadata_table([col]).column(col).to_numpy(zero_copy_only=False)
        if not np.array_equal(x, y):
            first = int(np.nonzero(x != y)[0][0])
            raise ConfigError(f"--crosscoder-data: {where} differ in {col} from row {first} on ({x[first]} vs "
                              f"{y[first]}); extract both from the same corpus, tokenizer and --context-size")
    if not np.array_equal(a.group_rows, b.group_rows):
        raise ConfigError(f"--crosscoder-data: {where} hold the same rows in different row groups (another "
                          "--examples-per-unit or writer setting); extract the second one with the first's settings")


class _PairedIter:
    """Batches of both datasets in lockstep, the second's hooks renamed; ``cursor`` is the first's (the same)."""

    def __init__(self, first, second) -> None:
        self.first, self.second = first, second

    @property
    def cursor(self):
        return (self.first or self.second).cursor

    def __iter__(self):
        gens = [iter(it) for it in (self.first, self.second) if it is not None]
        try:
            for parts in zip(*gens, strict=True):
                out = dict(parts[0]) if self.first is not None else {}
                if self.second is not None:
                    hooks = set(self.second.hooks)
                    out.update({PREFIX + k if k in hooks else k: v for k, v in parts[-1].items()
                                if k in hooks or self.first is None})
                yield out
        finally:
            for g in gens:
                g.close()


class PairedDataset:
    """``a`` with ``b``'s hooks as ``other:<hook>``: what the SAE runner reads from one dataset, from two."""

    def __init__(self, a: Dataset, b: Dataset, hooks: list[str]) -> None:
        check_aligned(a, b)
        require_finite(b, hooks, "sae train", "--hook, --target-hook")
        self.a, self.b = a, b
        self.manifest, self.storage, self.schema = a.manifest, a.storage, a.schema
        self.dataset_id, self.version, self.num_rows = a.dataset_id, a.version, a.num_rows

    @property
    def hooks(self) -> list[str]:
        return [*self.a.hooks, *(PREFIX + h for h in self.b.hooks)]

    def _split(self, hooks) -> tuple[list[str], list[str]]:
        hooks = [hooks] if isinstance(hooks, str) else list(hooks or [])
        return [h for h in hooks if not h.startswith(PREFIX)], [h[len(PREFIX):] for h in hooks if h.startswith(PREFIX)]

    def hook_spec(self, hook: str):
        return self.b.hook_spec(hook[len(PREFIX):]) if hook.startswith(PREFIX) else self.a.hook_spec(hook)

    def stats(self, hook: str):
        return self.b.stats(hook[len(PREFIX):]) if hook.startswith(PREFIX) else self.a.stats(hook)

    def metadata_table(self, columns=None):
        return self.a.metadata_table(columns)

    def iter_batches(self, hooks=None, shuffle_window: int | None = None, columns=None, **kw) -> _PairedIter:
        own, other = self._split(hooks)
        if shuffle_window is None:  # one window for both, so that both shuffles visit the same rows
            row_bytes = sum(self.hook_spec(h).row_bytes for h in self._names(own, other))
            shuffle_window = max(4 * kw.get("batch_size", 4096), (256 << 20) // max(row_bytes, 1))
        first = self.a.iter_batches(own, shuffle_window=shuffle_window, columns=columns, **kw) if own else None
        second = self.b.iter_batches(other, shuffle_window=shuffle_window, columns=[] if own else columns, **kw) \
            if other else None
        return _PairedIter(first, second)

    @staticmethod
    def _names(own: list[str], other: list[str]) -> list[str]:
        return [*own, *(PREFIX + h for h in other)]

    def take(self, rows, hooks=None, columns=None, dtype=None) -> dict:
        own, other = self._split(hooks)
        out = self.a.take(rows, hooks=own, columns=columns, dtype=dtype) if own else {}
        if other:
            got = self.b.take(rows, hooks=other, columns=[] if own else columns, dtype=dtype)
            out.update({(PREFIX + k if k in other else k): v for k, v in got.items()})
        return out
