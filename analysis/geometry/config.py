"""``actlake stats``' configuration; its CLI flags are generated from it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from simple_parsing import field

from analysis.common.args import TASK_NEUTRAL, HookTaskArgs
from analysis.geometry.registry import STATISTICS, get_statistic, statistic_names
from shards.config import check_choices, check_positive, split_list
from shards.errors import ConfigError


@dataclass
class StatsConfig(HookTaskArgs):
    """Layer statistics of every hook in one streaming pass per hook (a Ray task each): norms and layer change,
    voids, sparsity, massive activations, spectra, intrinsic dimension, cluster indices and AQI, logit lens."""

    out: str = "runs/stats"
    """Output URI: stats.parquet, per_dim.parquet, massive.parquet, summary.json and plots."""

    stats: list[str] = field(default_factory=lambda: ["all"], nargs="*", metavar="all|NAME[,NAME...]",
                             choices=STATISTICS.choices("all"),
                             help="Statistic families (one file each in analysis/geometry/): %(choices)s; all: those "
                                  "that apply to the dataset.")

    label: str | None = None
    """Metadata column whose classes the cluster indices score (needed by clusters)."""

    sample: int = 10000
    """Rows in the seeded sample (the same rows for every hook) for the statistics that are not decomposable:
    percentiles, TwoNN, silhouette, Davies–Bouldin, Dunn, median |x|, logit lens."""

    seed: int = 0
    """Seed of the sample."""

    eps: float = 1e-6
    """|x| <= eps counts as zero (sparsity); a dimension fires when |x| > eps (x > eps after a nonlinearity)."""

    massive_top: int = 100
    """Largest |x| entries listed per hook in massive.parquet."""

    massive_min: float = 100.0
    """Massive activations: |x| above this absolute value ..."""

    massive_ratio: float = 1000.0
    """... and above this multiple of the hook's median |x| (Sun et al. 2024)."""

    top_k: int = 10
    """var_top_k: the fraction of the variance in this many principal components."""

    void_alpha: float = 0.8
    """LAC threshold α: layer l is a void for a token when its norm change < α × the range of the earlier changes."""

    phase_column: str = "generated"
    """Boolean column marking generated tokens (voids are reported for prompt and generated tokens apart)."""

    aqi_gamma: float = 0.5
    """AQI weight γ of the Calinski–Harabasz term (1 − γ: the Xie–Beni term)."""

    aqi_space: Literal["raw", "tsne"] = "raw"
    """raw: AQI in the activation space only; tsne: also aqi_tsne on a 2-D t-SNE of the sample."""

    model: str | None = None
    """Logit lens: a causal LM (directory or package) or a saved unembed .safetensors; default: the dataset's
    artifacts/unembed.safetensors (actlake extract --save-unembed)."""

    batch_size: int = 8192
    """Rows per streamed batch."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.stats = split_list(self.stats) or ["all"]
        check_choices(self)
        check_positive(self, "sample", "batch_size", "massive_top", "top_k", "massive_ratio")
        for name in self.stats:
            if name != "all":
                get_statistic(name)
        if not 0 <= self.aqi_gamma <= 1:
            raise ConfigError(f"--aqi-gamma must be in [0, 1], got {self.aqi_gamma}")
        if self.eps < 0:
            raise ConfigError(f"--eps must be >= 0, got {self.eps}")
        if "clusters" in self.stats and not self.label:
            raise ConfigError("--stats clusters scores the classes of a label: give --label COLUMN "
                              "(a metadata column of the dataset, e.g. --label label)")

    @property
    def explicit(self) -> bool:
        """Families named one by one (not ``all``): one that cannot run is an error, not a note."""
        return "all" not in self.stats

    def families(self) -> list[str]:
        return [s for s in statistic_names() if not self.explicit or s in self.stats]


#: settings that do not change what a run computes: left out of its fingerprint
RUN_NEUTRAL = TASK_NEUTRAL | {"batch_size"}
