"""``mean``: the hook's activations replaced by their mean over a dataset (from its stored statistics)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from analysis.common.inputs import DatasetInput
from analysis.interventions.common import describe
from analysis.interventions.registry import InterventionKind, register
from analysis.interventions.sources import check_dataset, dataset_mean

if TYPE_CHECKING:
    from shards.interventions import ResolveContext


@dataclass
class MeanOptions:
    data: DatasetInput
    """An activation dataset extracted at this hook (row per token or per image), whose mean replaces it; URI@vN
    reads version N (default: the latest when the run is planned; the version read is recorded)."""


class Mean:
    kind = "mean"

    def __init__(self, ctx: ResolveContext, options: MeanOptions) -> None:
        self.hook, self.options = ctx.hook, options
        self.mean, self.source = dataset_mean(options.data, ctx)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return self.mean.to(x.device, x.dtype).expand_as(x).clone()

    def identity(self) -> dict:
        return describe(self.hook, self.kind, self.options, {"data": self.source})


MEAN = register(InterventionKind("mean", MeanOptions, Mean, "data=DATASET[@vN]",
                                 lambda options, storage: check_dataset(options.data, storage)))
