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
class FeatureSource:
    """Features of ``len(ids)`` stimuli, row i for ``ids[i]``, in the source's order."""

    ids: list[str]
    layers: dict[str, Layer]
    metadata: dict[str, list] = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)

    def check(self) -> None:
        if not self.ids:
            raise FeatureImportError("the source holds no stimuli")
        if len(set(self.ids)) != len(self.ids):
            dup = sorted({i for i in self.ids if self.ids.count(i) > 1})[:5]
            raise FeatureImportError(f"stimulus ids are not unique (e.g. {dup})")
        if not self.layers:
            raise FeatureImportError("the source holds no layers")
