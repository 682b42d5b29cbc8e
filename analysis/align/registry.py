"""Name tables of the alignment analyses: RDM methods, RDM comparison methods, alignment metrics and the
numeric conventions (whose library a result agrees with). Each method lives in its own file under ``rdms/``,
``comparisons/`` or ``metrics/`` and registers itself here; ``analysis.align`` imports them all."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from shards.config import did_you_mean
from shards.errors import ConfigError

ConventionName = Literal["rsatoolbox", "net2brain"]


@dataclass(frozen=True)
class RdmMethod:
    """A dissimilarity: ``compute(x, convention)`` maps stimuli × features (float64) to an N × N RDM.

    ``needs_runs``: the method compares independent measurements (crossnobis) and receives ``runs`` too.
    """

    name: str
    compute: Callable[..., np.ndarray]
    describe: dict[str, str]  #: convention -> what it computes there
    needs_runs: bool = False


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
    """A model–model metric. ``fn(X, Y, **options)`` on in-memory arrays (rows matched); ``from_moments`` (when
    not None) computes it exactly from the streamed cross moments of two views (``moments.PairMoments``), so
    it runs at any number of rows in memory independent of N."""

    name: str
    fn: Callable[..., float]
    describe: str
    reference: str
    from_moments: Callable[..., float] | None = None


RDM_METHODS: dict[str, RdmMethod] = {}
METRICS: dict[str, AlignmentMetric] = {}
COMPARISONS: dict[str, Comparison] = {}
CONVENTIONS: dict[str, Convention] = {}


def register_rdm(method: RdmMethod) -> RdmMethod:
    RDM_METHODS[method.name] = method
    return method


def register_comparison(cmp: Comparison) -> Comparison:
    COMPARISONS[cmp.name] = cmp
    return cmp


def register_metric(metric: AlignmentMetric) -> AlignmentMetric:
    METRICS[metric.name] = metric
    return metric


def get_metric(name: str) -> AlignmentMetric:
    return _get(METRICS, "alignment metric", name)


def _get(table: dict, kind: str, name: str):
    if name not in table:
        raise ConfigError(f"unknown {kind} {name!r}.{did_you_mean(name, table)} Known: {', '.join(table)}")
    return table[name]


def get_rdm_method(name: str) -> RdmMethod:
    return _get(RDM_METHODS, "RDM method", name)


def get_comparison(name: str) -> Comparison:
    return _get(COMPARISONS, "comparison method", name)


def get_convention(name: str) -> Convention:
    return _get(CONVENTIONS, "convention", name)


CONVENTIONS["rsatoolbox"] = Convention(
    "rsatoolbox", squared=False, ceiling_pool="method",
    describe="RDMs as rsatoolbox.rdm.calc_rdm (euclidean: squared distance / channels); scores as "
             "rsatoolbox.rdm.compare, averaged over subjects; noise ceiling as "
             "rsatoolbox.inference.boot_noise_ceiling (subjects pooled with pool_rdm for the method)",
    reference="rsatoolbox 0.3 (rsagroup/rsatoolbox)")
CONVENTIONS["net2brain"] = Convention(
    "net2brain", squared=True, ceiling_pool="mean",
    describe="RDMs as net2brain RDMCreator (euclidean: plain distance; --standardize: z-score over stimuli with "
             "std + 1e-7); scores squared per subject then averaged (R²), t-test against 0 and SEM over "
             "subjects; noise ceiling as net2brain NoiseCeiling (mean RDM, squared score)",
    reference="Net2Brain (cvai-roig-lab/Net2Brain, evaluations/rsa.py, noiseceiling.py)")
