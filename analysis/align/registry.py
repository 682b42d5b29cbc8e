"""Name tables of the alignment analyses: RDM methods, RDM comparison methods, alignment metrics and the
numeric conventions (whose library a result agrees with). Each method lives in its own file under ``rdms/``,
``comparisons/`` or ``metrics/`` and registers itself here; ``analysis.align`` imports them all."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from shards.registry import Registry


@dataclass(frozen=True)
class RdmMethod:
    """A dissimilarity: ``compute(x, convention)`` maps stimuli × features (float64) to an N × N RDM.

    ``needs_runs``: the method compares independent measurements (crossnobis) and receives ``runs`` too.
    ``options``: its options dataclass (flags of ``align rsa``), or None.
    """

    name: str
    compute: Callable[..., np.ndarray]
    describe: dict[str, str]  #: convention -> what it computes there
    needs_runs: bool = False
    options: type | None = None


@dataclass(frozen=True)
class Transform:
    """A transform of condensed RDMs applied before comparing (topological RSA): ``apply(vectors, options)``
    maps ``(k, M)`` vectors to ``(k, M)``. ``every_pair``: it needs every stimulus pair (no NaN pairs dropped)."""

    name: str
    apply: Callable[[np.ndarray, object], np.ndarray]
    describe: str
    options: type | None = None
    every_pair: bool = True


@dataclass(frozen=True)
class Comparison:
    """An RDM comparison: ``score(a, b)`` of condensed RDM vectors ``a`` (k, M) and ``b`` (s, M) -> (k, s).

    ``embed`` (when not None) maps vectors to a space where the score is the cosine of the embedded vectors
    (ranks for Spearman, centring for Pearson, whitening for the cov-weighted ones): inference uses it to
    permute and resample without recomputing the embedding. ``pool`` is rsatoolbox's ``pool_rdm`` for this
    method: the single RDM that best predicts a set under the method (the noise ceiling's reference).
    """

    name: str
    score: Callable[[np.ndarray, np.ndarray], np.ndarray]
    pool: Callable[[np.ndarray], np.ndarray]
    rsatoolbox_name: str  #: the method's name in rsatoolbox.rdm.compare
    describe: str
    embed: Callable[[np.ndarray], np.ndarray] | None = None
    rank_based: bool = False
    entrywise: bool = True  #: the score ignores which stimulus pair an entry belongs to (not the whitened ones)
    needs_variance: bool = True  #: undefined for a constant RDM (correlations); a cosine is defined for it


@dataclass(frozen=True)
class Convention:
    """Whose numbers a result reproduces: how model RDMs are built, how scores are aggregated over subjects
    and how the noise ceiling pools the subjects' RDMs."""

    name: str
    squared: bool  #: scores are squared per subject before averaging (Net2Brain's R²)
    ceiling_pool: Literal["method", "mean"]  #: rsatoolbox's pool_rdm for the method, or the plain mean RDM
    describe: str
    reference: str


@dataclass(frozen=True)
class AlignmentMetric:
    """A model–model metric, computed one of two ways (``streams(options)`` says which):

    - streamed: ``from_moments(moments, options)`` exactly from the cross moments of two views
      (``moments.PairMoments``), in memory independent of the number of rows;
    - in memory: ``prepare(x, options)`` once per view (a Gram matrix, neighbour lists), then
      ``compare(a, b, options)`` per pair.

    ``fn(X, Y, **options)`` is the plain function on two matched arrays; ``options`` the metric's options
    dataclass (or None: its fields become flags of ``command``); ``method(options)`` the name results carry
    (``linear_cka_debiased``); ``null(x, y, permutations, options) -> (score, permuted scores)`` its permutation
    null (``--permutations``; ``null.py``), computed from what it prepares once (None: the metric has no null);
    ``command``: the ``align`` command whose ``--metrics`` offers it."""

    name: str
    fn: Callable[..., float]
    describe: str
    reference: str
    from_moments: Callable[[object, object], float] | None = None
    prepare: Callable[[np.ndarray, object], object] | None = None
    compare: Callable[[object, object, object], float] | None = None
    options: type | None = None
    method: Callable[[object], str] | None = None
    streams: Callable[[object], bool] | None = None  #: default: whenever ``from_moments`` exists
    null: Callable[[np.ndarray, np.ndarray, np.ndarray, object], tuple[float, np.ndarray]] | None = None
    command: Literal["cka", "knn"] = "cka"

    def runs_streamed(self, options) -> bool:
        return self.from_moments is not None and (self.streams is None or self.streams(options))

    def method_name(self, options) -> str:
        return self.method(options) if self.method is not None else self.name


RDM_METHODS: Registry[RdmMethod] = Registry("RDM method")
TRANSFORMS: Registry[Transform] = Registry("transform")
METRICS: Registry[AlignmentMetric] = Registry("alignment metric")
COMPARISONS: Registry[Comparison] = Registry("comparison method")
CONVENTIONS: Registry[Convention] = Registry("convention")

register_rdm, get_rdm_method = RDM_METHODS.register, RDM_METHODS.lookup
register_transform, get_transform = TRANSFORMS.register, TRANSFORMS.lookup
register_comparison, get_comparison = COMPARISONS.register, COMPARISONS.lookup
register_metric, get_metric = METRICS.register, METRICS.lookup
get_convention = CONVENTIONS.lookup


CONVENTIONS.register(Convention(
    "rsatoolbox", squared=False, ceiling_pool="method",
    describe="RDMs as rsatoolbox.rdm.calc_rdm (euclidean: squared distance / channels); scores as "
             "rsatoolbox.rdm.compare, averaged over subjects; noise ceiling as "
             "rsatoolbox.inference.boot_noise_ceiling (subjects pooled with pool_rdm for the method)",
    reference="rsatoolbox 0.3 (rsagroup/rsatoolbox)"))
CONVENTIONS.register(Convention(
    "net2brain", squared=True, ceiling_pool="mean",
    describe="RDMs as net2brain RDMCreator (euclidean: plain distance; --standardize: z-score over stimuli with "
             "std + 1e-7); scores squared per subject then averaged (R²), t-test against 0 and SEM over "
             "subjects; noise ceiling as net2brain NoiseCeiling (mean RDM, squared score)",
    reference="Net2Brain (cvai-roig-lab/Net2Brain, evaluations/rsa.py, noiseceiling.py)"))
