"""Configurations of ``actlake align rsa|cka|knn|encode``; their CLI flags are generated from these."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from simple_parsing import field

from analysis.align.topology import TRANSFORMS
from analysis.common.args import TASK_NEUTRAL, HookTaskArgs
from shards.config import check_choices, check_positive, split_list
from shards.errors import ConfigError


@dataclass
class AlignArgs(HookTaskArgs):
    """Model-side settings every alignment command shares."""

    out: str = "runs/align"
    """Output URI: results.parquet, summary.json and plots."""

    key: Literal["auto", "stimulus_id", "example_id"] = "auto"
    """Column matching dataset rows to stimuli: stimulus_id or example_id (auto: stimulus_id when present)."""

    pool: Literal["none", "mean", "first", "last", "max"] = "none"
    """How a stimulus' rows (tokens, patches) become one vector: none (one row each), mean, first, last, max."""

    ids: str | None = None
    """Stimulus ids in the brain data's order (text file, .npy, or a table with stimulus_id); default: the
    order of the dataset's stimuli."""

    intersect: bool = field(default=False, action="store_true")
    """Keep only the stimuli present on both sides (and say how many were dropped) instead of refusing."""

    batch_size: int = 8192
    """Rows per streamed batch."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choices(self)
        check_positive(self, "batch_size")


@dataclass
class RsaConfig(AlignArgs):
    """Representational similarity analysis of every hook against brain RDMs, with noise ceilings, bootstrap
    confidence intervals, permutation p-values and paired comparison of hooks (a task per hook)."""

    brain: list[str] = field(default_factory=list, nargs="*", metavar="RDMFILE[,RDMFILE...]")
    """Brain RDM files (.npz, .npy, .mat; FILE:KEY for one array of several): N x N or subjects x N x N."""

    rdm: Literal["correlation", "euclidean", "cosine", "crossnobis"] = "correlation"
    """Model RDM: correlation (1 - Pearson), euclidean, cosine, crossnobis (needs --runs)."""

    compare: Literal["spearman", "pearson", "kendall_a", "rho_a", "cosine", "corr_cov", "cosine_cov"] = "spearman"
    """RDM comparison: spearman, pearson, kendall_a, rho_a, cosine, corr_cov, cosine_cov."""

    convention: Literal["rsatoolbox", "net2brain"] = "rsatoolbox"
    """Whose numbers to reproduce (docs/alignment.md): rsatoolbox, or net2brain (squared scores, mean-RDM
    ceilings, plain euclidean)."""

    standardize: bool = field(default=False, action="store_true")
    """z-score each feature over stimuli before the RDM (Net2Brain's standardize_on_dim=0)."""

    noise_ceiling: bool = field(default=False, action="store_true")
    """Lower and upper noise ceilings of each multi-subject target."""

    bootstrap: int = 0
    """Bootstrap resamples for confidence intervals (0: none)."""

    bootstrap_over: Literal["both", "stimuli", "subjects"] = "both"
    """What the bootstrap resamples."""

    permutations: int = 0
    """Stimulus-label permutations for p-values (0: none)."""

    seed: int = 0
    """Seed of the resamples and permutations (the same for every hook: paired comparisons)."""

    transform: Literal["none", "geotopological", "geodesic", "geotopological+geodesic"] = "none"
    """Topological RSA: transform every RDM before comparing (Lin & Kriegeskorte 2023)."""

    gt_low: float = 0.0
    """Geo-topological lower quantile (dissimilarities below it become 0)."""

    gt_up: float = 1.0
    """Geo-topological upper quantile (above it: 1)."""

    pooled_quantiles: bool = field(default=False, action="store_true")
    """Geo-topological quantiles over all RDMs of a stack at once (rsatoolbox's behaviour) instead of per RDM."""

    runs: str | None = None
    """Crossnobis: the metadata column naming each row's run (independent measurement)."""

    nan_policy: Literal["refuse", "drop-pairs", "drop-subjects"] = "refuse"
    """NaNs in a brain RDM: refuse, drop the stimulus pairs that are NaN in any subject, or drop those subjects."""

    subject_axis: int = 0
    """Axis of the subjects in a 3-D RDM array (moved to the front)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.brain = split_list(self.brain)
        if not self.brain:
            raise ConfigError("--brain: give at least one RDM file, e.g. --brain fmri_IT_RDMs.npz")
        if self.transform not in TRANSFORMS:
            raise ConfigError(f"--transform: one of {', '.join(TRANSFORMS)}")
        if not 0 <= self.gt_low <= self.gt_up <= 1:
            raise ConfigError(f"--gt-low/--gt-up must satisfy 0 <= low <= up <= 1, got {self.gt_low}, {self.gt_up}")
        if self.bootstrap < 0 or self.permutations < 0:
            raise ConfigError("--bootstrap and --permutations count resamples: 0 or more")
        if self.rdm == "crossnobis" and not self.runs:
            raise ConfigError("--rdm crossnobis needs repeated measurements: --runs COLUMN names each row's run")
        if self.runs and self.rdm != "crossnobis":
            raise ConfigError("--runs is for --rdm crossnobis")


RSA_NEUTRAL = TASK_NEUTRAL | {"batch_size"}


@dataclass
class PairArgs(AlignArgs):
    """Two sets of hooks (of one dataset, or of --data and --data2) compared pair by pair."""

    data2: str | None = None
    """Second dataset (default: --data; then every pair of --hooks is compared)."""

    hooks2: list[str] = field(default_factory=list, nargs="*", metavar="HOOK[,HOOK...]")
    """Hooks of the second dataset (default: --hooks)."""

    match: Literal["auto", "example_id,position", "stimulus_id"] = "auto"
    """How rows of the two datasets pair up (auto: stimulus_id when both have it and --pool is set, else
    example_id and position)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.hooks2 = split_list(self.hooks2)


@dataclass
class CkaConfig(PairArgs):
    """Centered kernel alignment between every pair of hooks; linear CKA streams over the rows in one pass
    (exact, memory independent of N), RBF CKA holds N x N Gram matrices."""

    kernel: Literal["linear", "rbf"] = "linear"
    """linear (streamed in feature space) or rbf (median heuristic, in memory)."""

    debiased: bool = field(default=False, action="store_true")
    """Unbiased HSIC estimator (Song et al. 2012) instead of the biased one."""

    metrics: list[str] = field(default_factory=lambda: ["cka"], nargs="*", metavar="cka,angular,procrustes")
    """Also compute shape distances from the same moments: angular, procrustes (Williams et al. 2021)."""

    rbf_threshold: float = 1.0
    """RBF: σ = threshold x the median distance."""

    max_rows: int | None = None
    """Use only the first N matched rows (RBF needs N x N memory)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.metrics = split_list(self.metrics) or ["cka"]
        bad = [m for m in self.metrics if m not in ("cka", "angular", "procrustes")]
        if bad:
            raise ConfigError(f"--metrics: unknown {bad}; choose from cka, angular, procrustes")
        if self.kernel == "rbf" and set(self.metrics) != {"cka"}:
            raise ConfigError("--metrics angular/procrustes are linear; use them with --kernel linear")


@dataclass
class KnnConfig(PairArgs):
    """Mutual k-nearest-neighbour alignment between every pair of hooks (platonic-representation style)."""

    k: int = 10
    """Neighbours per row."""

    max_rows: int | None = None
    """Use only the first N matched rows."""

    block: int = 2048
    """Rows per block of the neighbour search (memory: block x N similarities)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "k", "block")


@dataclass
class EncodeConfig(AlignArgs):
    """Voxelwise ridge encoding models from every hook to every response column: an alpha per target by inner
    cross-validation, outer k-fold by stimulus, held-out Pearson r and R² per target (a task per hook)."""

    responses: str = ""
    """Responses keyed by stimulus id: Parquet/CSV (stimulus_id + one column per target) or NPZ (responses,
    stimulus_id, optional targets)."""

    alphas: list[float] = field(default_factory=lambda: [10.0 ** e for e in range(-2, 7)], nargs="*",
                                metavar="A[,A...]")
    """Ridge penalties searched per target (default 1e-2 ... 1e6)."""

    folds: int = 5
    """Outer folds by stimulus (scikit-learn KFold, no shuffle)."""

    inner_folds: int = 5
    """Inner folds choosing each target's alpha."""

    alpha_score: Literal["r2", "neg_mse"] = "r2"
    """Inner-CV criterion: r2 (scikit-learn RidgeCV / GridSearchCV) or neg_mse (himalaya RidgeCV)."""

    ceilings: str | None = None
    """Table of per-target noise ceilings (columns target, ceiling): scores are also given divided by them."""

    target_batch: int = 4096
    """Targets solved at once (memory: stimuli x batch)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.alphas = split_list(self.alphas, float)
        if not self.responses:
            raise ConfigError("--responses: give the response table (Parquet/CSV/NPZ keyed by stimulus_id)")
        if not self.alphas or min(self.alphas) <= 0:
            raise ConfigError("--alphas: positive ridge penalties, e.g. --alphas 0.1,1,10,100")
        check_positive(self, "folds", "inner_folds", "target_batch")
        if self.folds < 2 or self.inner_folds < 2:
            raise ConfigError("--folds and --inner-folds must be at least 2")
