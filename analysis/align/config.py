"""Configurations of ``actlake align rsa|cka|knn|encode``; their CLI flags are generated from these.

No ``from __future__ import annotations`` here: the choices' types (``Pool``, ``KeyName``, ...) are named once, where
they are used, and simple-parsing resolves a subclass's string annotations in the globals of the base class that
defines a flag (``HookTaskArgs``), where those names do not exist."""

from dataclasses import dataclass
from typing import Literal

from simple_parsing import field

import analysis.align  # noqa: F401 - registers the methods whose names and options are the choices here
from analysis.align.features import KeyName, Pool
from analysis.align.inference import BootstrapOver
from analysis.align.registry import (
    COMPARISONS,
    CONVENTIONS,
    METRICS,
    RDM_METHODS,
    TRANSFORMS,
    RdmMethod,
    get_comparison,
    get_convention,
    get_metric,
    get_rdm_method,
    get_transform,
)
from analysis.align.ridge import AlphaScore
from analysis.common.args import TASK_NEUTRAL, HookTaskArgs
from analysis.common.inputs import DatasetInput
from analysis.common.options import merged_options, options_of, refuse_foreign_options
from shards.config import check_choices, check_positive, split_list
from shards.errors import ConfigError


@dataclass
class AlignArgs(HookTaskArgs):
    """Model-side settings every alignment command shares."""

    out: str = "runs/align"
    """Output URI: results.parquet, summary.json and plots."""

    key: KeyName = "auto"
    """Column matching dataset rows to stimuli: stimulus_id or example_id (auto: stimulus_id when present)."""

    pool: Pool = "none"
    """How a stimulus' rows (tokens, patches) become one vector: none (one row each), mean, first, last, max."""

    ids: str | None = None
    """Stimulus ids in the brain data's order (text file, .npy, or a table with stimulus_id); default: the
    order of the dataset's stimuli."""

    intersect: bool = field(default=False, action="store_true")
    """Keep only the stimuli present on both sides (and say how many were dropped) instead of refusing."""

    batch_size: int = 8192
    """Rows per streamed batch."""

    run_plots: bool = field(default=False, action="store_true")
    """With a pattern in --data (a sweep): also draw each run's own plots and report.html. By default a sweep's
    runs write their results and records (each resumable, as a single run) and the sweep writes one report.html
    over all of them, linking every run: at tens of stimuli the per-run pages cost more than the analyses."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choices(self)
        check_positive(self, "batch_size")


RdmOptions = merged_options("RdmOptions", (m.options for m in RDM_METHODS.values()),
                            "Options of the RDM methods (each flag names the method it applies to).", __name__)
TransformOptions = merged_options("TransformOptions", (t.options for t in TRANSFORMS.values()),
                                  "Options of the RDM transforms.", __name__)


@dataclass
class RsaConfig(RdmOptions, TransformOptions, AlignArgs):
    """Representational similarity analysis of every hook against brain RDMs, with noise ceilings, bootstrap
    confidence intervals, permutation p-values and paired comparison of hooks (a task per hook)."""

    brain: list[str] = field(default_factory=list, nargs="*", metavar="RDMFILE[,RDMFILE...]")
    """Brain RDM files (.npz, .npy, .mat; FILE:KEY for one array of several): N x N or subjects x N x N."""

    baselines: list[str] = field(default_factory=list, nargs="*", metavar="RDMFILE[,RDMFILE...]")
    """Fixed model RDMs to score beside the hooks (e.g. rsatoolbox's 92_modelRDMs.mat: animacy, faces, ...),
    each RDM of a file against every target: baselines.parquet, and dashed lines on a sweep's plot."""

    rdm: str = field(default="correlation", choices=RDM_METHODS.choices())
    """Model RDM (one file each in analysis/align/rdms/; docs/alignment.md)."""

    compare: str = field(default="spearman", choices=COMPARISONS.choices())
    """RDM comparison (one file each in analysis/align/comparisons/; rsatoolbox's names)."""

    convention: str = field(default="rsatoolbox", choices=CONVENTIONS.choices())
    """Whose numbers to reproduce (docs/alignment.md): rsatoolbox, or net2brain (squared scores, mean-RDM
    ceilings, plain euclidean)."""

    standardize: bool = field(default=False, action="store_true")
    """z-score each feature over stimuli before the RDM (Net2Brain's standardize_on_dim=0)."""

    noise_ceiling: bool = field(default=False, action="store_true")
    """Lower and upper noise ceilings of each multi-subject target."""

    bootstrap: int = 0
    """Bootstrap resamples for confidence intervals (0: none)."""

    bootstrap_over: BootstrapOver = "both"
    """What the bootstrap resamples."""

    permutations: int = 0
    """Stimulus-label permutations for p-values (0: none)."""

    seed: int = 0
    """Seed of the resamples and permutations (the same for every hook: paired comparisons)."""

    transform: str = field(default="none", choices=TRANSFORMS.choices())
    """Topological RSA: transform every RDM before comparing (Lin & Kriegeskorte 2023)."""

    nan_policy: Literal["refuse", "drop-pairs", "drop-subjects"] = "refuse"
    """NaNs in a brain RDM: refuse, drop the stimulus pairs that are NaN in any subject, or drop those subjects."""

    subject_axis: int = 0
    """Axis of the subjects in a 3-D RDM array (moved to the front)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.brain = split_list(self.brain)
        self.baselines = split_list(self.baselines)
        if not self.brain:
            raise ConfigError("--brain: give at least one RDM file, e.g. --brain fmri_IT_RDMs.npz")
        get_comparison(self.compare)
        get_convention(self.convention)
        if self.bootstrap < 0 or self.permutations < 0:
            raise ConfigError("--bootstrap and --permutations count resamples: 0 or more")
        refuse_foreign_options({m.name: m.options for m in RDM_METHODS.values()}, [self.rdm], self, "--rdm")
        refuse_foreign_options({t.name: t.options for t in TRANSFORMS.values()}, [self.transform], self,
                               "--transform")
        self.rdm_options  # noqa: B018 - checks the chosen method's own options
        self.transform_options  # noqa: B018

    @property
    def rdm_method(self) -> RdmMethod:
        return get_rdm_method(self.rdm)

    @property
    def rdm_options(self):
        """The chosen RDM method's options (checked), or None."""
        return options_of(self.rdm_method.options, self)

    @property
    def transform_options(self):
        """The chosen transform's options (checked), or None."""
        return options_of(get_transform(self.transform).options, self)

    @property
    def runs_column(self) -> str | None:
        """The column naming each row's run, for a method that compares independent measurements."""
        return getattr(self, "runs", None) if self.rdm_method.needs_runs else None


RSA_NEUTRAL = TASK_NEUTRAL | {"batch_size"}


@dataclass
class PairArgs(AlignArgs):
    """Two sets of hooks (of one dataset, or of --data and --data2) compared pair by pair."""

    data2: DatasetInput | None = field(default=None, metavar="URI[@vN]")
    """Second dataset (default: --data; then every pair of --hooks is compared); URI@vN reads version N (default:
    its latest when the run starts; recorded in run.json)."""

    hooks2: list[str] = field(default_factory=list, nargs="*", metavar="HOOK[,HOOK...]")
    """Hooks of the second dataset (default: --hooks)."""

    match: Literal["auto", "example_id,position", "stimulus_id"] = "auto"
    """How rows of the two datasets pair up (auto: stimulus_id when both have it and --pool is set, else
    example_id and position)."""

    max_rows: int | None = None
    """Use only the first N matched rows for the metrics computed in memory (RBF CKA and k-NN hold N x N or
    N x k values); streamed metrics use every row."""

    permutations: int = 0
    """A permutation null beside each score: the metric with the second view's rows (stimuli) permuted this many
    times (null_mean, null_sd, p_value columns; rows in memory as N x N Gram matrices, N <= 10,000)."""

    seed: int = 0
    """Seed of the permutations."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.permutations < 0:
            raise ConfigError(f"--permutations {self.permutations}: give 0 (none) or more")
        self.hooks2 = split_list(self.hooks2)
        if self.data2 is not None and not self.data2.uri:
            raise ConfigError(f"--data2 {self.data2}: name the second dataset (--data2 URI@vN)")
        for name in self.metric_names():
            options_of(get_metric(name).options, self)  # a bad option fails here, before any data is read

    def metric_names(self) -> list[str]:
        """The metrics this command computes."""
        raise NotImplementedError


def offered_by(command: str):
    """Which alignment metrics ``align COMMAND --metrics`` offers (``AlignmentMetric.command``)."""
    return lambda m: m.command == command


def metric_options(command: str) -> type:
    """The options of the metrics ``command`` offers, merged (each field once): that command's flags."""
    return merged_options(f"{command.capitalize()}MetricOptions",
                          (m.options for m in METRICS.values() if m.command == command),
                          f"Options of the metrics of align {command} (each applies to the metrics it names).",
                          __name__)


CkaMetricOptions = metric_options("cka")
KnnMetricOptions = metric_options("knn")


@dataclass
class MetricArgs(PairArgs):
    """``--metrics``: names from the metric registry, offered by this command (``COMMAND``)."""

    COMMAND = ""  #: the ``AlignmentMetric.command`` whose metrics this config offers

    def __post_init__(self) -> None:
        self.metrics = split_list(self.metrics)
        offered = METRICS.names(offered_by(self.COMMAND))
        bad = [m for m in self.metrics if m not in offered]
        if bad or not self.metrics:
            raise ConfigError(f"--metrics {', '.join(bad or self.metrics) or '(none)'}: choose from "
                              f"{', '.join(offered)}")
        refuse_foreign_options({m: METRICS[m].options for m in offered}, self.metrics, self, "--metrics")
        super().__post_init__()

    def metric_names(self) -> list[str]:
        return list(self.metrics)


@dataclass
class CkaConfig(CkaMetricOptions, MetricArgs):
    """Centered kernel alignment between every pair of hooks; linear CKA streams over the rows in one pass
    (exact, memory independent of N), RBF CKA holds N x N Gram matrices."""

    COMMAND = "cka"

    metrics: list[str] = field(default_factory=lambda: ["cka"], nargs="*", metavar="NAME[,NAME...]",
                               choices=METRICS.choices(where=offered_by("cka")),
                               help="Metrics (one file each in analysis/align/metrics/): %(choices)s.")


@dataclass
class KnnConfig(KnnMetricOptions, MetricArgs):
    """Mutual k-nearest-neighbour alignment between every pair of hooks (platonic-representation style)."""

    COMMAND = "knn"

    metrics: list[str] = field(default_factory=lambda: ["mutual_knn"], nargs="*", metavar="NAME[,NAME...]",
                               choices=METRICS.choices(where=offered_by("knn")),
                               help="Neighbourhood metrics (one file each in analysis/align/metrics/): %(choices)s.")


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

    alpha_score: AlphaScore = "r2"
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


@dataclass
class ScoreConfig(AlignArgs):
    """Brain-Score-style neural predictivity of every hook: cross-validated PLS or ridge to each neuroid, median
    held-out Pearson r, split-half internal-consistency ceiling (Spearman-Brown), ceiled score, and the layer
    committed on one half of the stimuli and scored on the other (a task per hook)."""

    responses: str = ""
    """Responses keyed by stimulus id, with repetitions: Parquet/CSV (stimulus_id, optional repetition, one numeric
    column per neuroid) or NPZ (responses: repetitions x stimuli x neuroids or stimuli x neuroids, stimulus_id)."""

    regression: Literal["pls", "ridge"] = "pls"
    """PLS (25 components, unscaled: Brain-Score's default) or ridge (alpha --ridge-alpha)."""

    pls_components: int = 25
    ridge_alpha: float = 1.0

    splits: int = 10
    """Random train/test splits of the stimuli (and halvings of the repetitions for the ceiling)."""

    train_size: float = 0.9
    """Fraction of the stimuli each split trains on."""

    seed: int = 1
    """random_state of every split (Brain-Score's 1); the layer-commitment halves use it too."""

    commit: bool = True
    """Choose the layer on half of the stimuli and score it on the other half (--commit false: skip)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choices(self)
        if not self.responses:
            raise ConfigError("--responses: give the response table (Parquet/CSV/NPZ keyed by stimulus_id)")
        check_positive(self, "pls_components", "splits")
        if not 0 < self.train_size < 1 or self.ridge_alpha <= 0:
            raise ConfigError("--train-size must lie in (0, 1) and --ridge-alpha be positive")


@dataclass
class BandedConfig(AlignArgs):
    """Banded ridge from several hooks (the bands, --hooks A,B[,C]) to every response column together, one
    penalty per band (himalaya's BandedRidgeCV), each band's share of the held-out R², and the unique/shared
    variance of two or three bands."""

    responses: str = ""
    """Responses keyed by stimulus id: Parquet/CSV (stimulus_id + one column per target) or NPZ."""

    alphas: list[float] = field(default_factory=lambda: [10.0 ** e for e in range(-2, 7)], nargs="*",
                                metavar="A[,A...]")
    """Ridge penalties searched (default 1e-2 ... 1e6)."""

    bands_from: list[str] = field(default_factory=list, nargs="*", metavar="DATASET[@vN]#HOOK")
    """More bands from other datasets on the same stimuli (another model: zoo/vit#resid.1), joined by stimulus id;
    DATASET@vN reads version N (default: its latest when the run starts); the ids and versions read are recorded in
    run.json."""

    steps: int = 10
    """Band weights searched on the simplex in steps of 1/steps."""

    folds: int = 5
    """Outer folds by stimulus (KFold, no shuffle): the R² is held out."""

    inner_folds: int = 5
    """Inner folds choosing each target's band weights and penalty."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.alphas = split_list(self.alphas, float)
        self.bands_from = split_list(self.bands_from)
        if not self.responses:
            raise ConfigError("--responses: give the response table (Parquet/CSV/NPZ keyed by stimulus_id)")
        if not self.alphas or min(self.alphas) <= 0:
            raise ConfigError("--alphas: positive ridge penalties, e.g. --alphas 0.1,1,10,100")
        bad = [b for b in self.bands_from if "#" not in b]
        if bad:
            raise ConfigError(f"--bands-from {bad}: give DATASET[@vN]#HOOK, e.g. zoo/vit-random@v2#resid.1")
        check_positive(self, "steps", "folds", "inner_folds")
        if self.folds < 2 or self.inner_folds < 2:
            raise ConfigError("--folds and --inner-folds must be at least 2")
