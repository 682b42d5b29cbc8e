"""What every import layout produces: stimulus ids in the source's order and per-layer arrays."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from shards.errors import ActlakeError


class FeatureImportError(ActlakeError, ValueError):
    """The source cannot be imported as asked."""


@dataclass
class Layer:
    """One layer's features: the original name, per-row shape and dtype, and a reader of row ranges."""

    name: str
    shape: tuple[int, ...]
    dtype: str  #: numpy dtype name, or "bfloat16" (rows then hold the raw 16-bit patterns as uint16)
    rows: Callable[[int, int], np.ndarray]  #: (start, stop) -> array of shape (stop - start, *shape)


@dataclass
class TokenRows:
    """A token-level source's fixed columns: ``columns(start, stop)`` -> ``example_id``, ``position`` and
    ``token_id`` arrays of those rows."""

    rows: int
    columns: Callable[[int, int], dict[str, np.ndarray]]


@dataclass
class FeatureSource:
    """Features of ``len(ids)`` stimuli, row i for ``ids[i]``, in the source's order; or, for a token-level
    source (``tokens`` set, ``ids`` empty), of ``tokens.rows`` tokens."""

    ids: list[str]
    layers: dict[str, Layer]
    metadata: dict[str, list] = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)
    tokens: TokenRows | None = None

    @property
    def num_rows(self) -> int:
        return self.tokens.rows if self.tokens is not None else len(self.ids)

    def check(self) -> None:
        if self.tokens is not None:
            if not self.tokens.rows or not self.layers:
                raise FeatureImportError("the source holds no tokens or no layers")
            return
        if not self.ids:
            raise FeatureImportError("the source holds no stimuli")
        if len(set(self.ids)) != len(self.ids):
            dup = sorted({i for i in self.ids if self.ids.count(i) > 1})[:5]
            raise FeatureImportError(f"stimulus ids are not unique (e.g. {dup})")
        if not self.layers:
            raise FeatureImportError("the source holds no layers")
