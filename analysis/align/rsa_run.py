"""``actlake align rsa``: every hook of a dataset against brain RDMs, one task per hook.

The driver reads and checks the brain files, matches stimuli, prepares the brain RDM vectors (NaN policy,
transform) and their noise ceilings (``plan_rsa``); each hook task builds its model RDM and scores it against
every target (bootstrap and permutations included) and writes ``OUT/hooks/HOOK.json`` (its bootstrap values in
``HOOK-boot.npy``, its RDM for the plots in ``HOOK-rdm.npy``); a killed run rerun skips finished hooks. The
last step writes ``results.parquet``, ``paired.parquet``, ``summary.json`` and the plots.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from analysis.align.config import RSA_NEUTRAL, RsaConfig
from analysis.align.features import StimulusPlan, load_items, plan_stimuli
from analysis.align.inference import bootstrap, paired_test, percentile_ci, permutation_null, permutation_p
from analysis.align.inputs import BrainTarget, load_brain_rdms, read_ids
from analysis.align.registry import get_comparison, get_convention, get_rdm_method, get_transform
from analysis.align.report import write_rsa_plots
from analysis.align.rsa import noise_ceiling, rdm
from analysis.align.sweep import is_pattern, sweep_brain
from analysis.align.topology import transform
from analysis.align.vectors import RdmError, condensed
from analysis.common.hooks import layer_index
from analysis.common.inputs import RunSummary
from analysis.common.perhook import HOOKS, Assembly, HookAnalysis, HookTask, run_hook_analysis
from analysis.common.results import Results, npy_bytes, read_npy
from shards.records import JsonRecord

log = logging.getLogger("actlake.align")
CONFIG = RsaConfig
SUMMARY = "summary.json"
PLOT_RDM_MAX = 2000  #: model RDMs up to this many stimuli are kept for the heatmaps


@dataclass(kw_only=True)
class PreparedTarget:
    """A brain target as the hook tasks use it: condensed (subjects × M) after the NaN policy and transform."""

    name: str
    source: str
    subjects: list[str]
    vectors: np.ndarray
    keep: np.ndarray  #: which of the N(N−1)/2 pairs are compared (False: dropped for NaN)
    ceiling: tuple[float, float] | None
    notes: list[str] = field(default_factory=list)


@dataclass(kw_only=True)
class RsaPlan:
    stimuli: StimulusPlan
    targets: list[PreparedTarget]
    notes: list[str]
    baselines: dict[str, np.ndarray] = field(default_factory=dict)  #: name -> condensed RDM in the matched order


def _subset(target: BrainTarget, order: list[int] | None) -> np.ndarray:
    if order is None:
        return target.rdms
    ix = np.asarray(order)
    return target.rdms[:, ix][:, :, ix]


def _nan_policy(cfg: RsaConfig, t: BrainTarget, stack: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[str],
                                                                              list[str]]:
    vec = condensed(stack)
    bad = ~np.isfinite(vec)
    keep = np.ones(vec.shape[1], dtype=bool)
    subjects, notes = list(t.subjects), []
    if not bad.any():
        return vec, keep, subjects, notes
    if cfg.nan_policy == "refuse":
        per = [s for s, b in zip(t.subjects, bad.any(axis=1), strict=True) if b]
        raise RdmError(f"{t.source}: {int(bad.sum())} dissimilarities are NaN or infinite (subjects {per[:10]}). "
                       "Say what to do: --nan-policy drop-pairs (compare only the pairs finite in every subject) "
                       "or --nan-policy drop-subjects")
    if cfg.nan_policy == "drop-subjects":
        ok = ~bad.any(axis=1)
        if ok.sum() == 0:
            raise RdmError(f"{t.source}: every subject has NaN dissimilarities; use --nan-policy drop-pairs")
        notes.append(f"{t.name}: dropped {int((~ok).sum())} subjects with NaN dissimilarities")
        return vec[ok], keep, [s for s, o in zip(subjects, ok, strict=True) if o], notes
    if get_transform(cfg.transform).every_pair:
        raise RdmError(f"{t.source}: --nan-policy drop-pairs cannot be combined with --transform {cfg.transform} "
                       "(it needs every pair); use --nan-policy drop-subjects")
    keep = ~bad.any(axis=0)
    notes.append(f"{t.name}: compared {int(keep.sum())} of {len(keep)} stimulus pairs (the others are NaN)")
    return vec[:, keep], keep, subjects, notes


def _brain_targets(cfg: RsaConfig) -> tuple[list[BrainTarget], list[str] | None, int]:
    """The brain RDM files, the stimulus ids they follow (--ids) and their number of stimuli."""
    targets = [load_brain_rdms(uri, cfg.storage, cfg.subject_axis) for uri in cfg.brain]
    ids = read_ids(cfg.ids, cfg.storage) if cfg.ids else None
    n = {t.rdms.shape[1] for t in targets}
    if len(n) > 1:
        raise RdmError(f"the brain RDMs have different numbers of stimuli: "
                       f"{ {t.source: t.rdms.shape[1] for t in targets} }")
    n_brain = n.pop()
    if ids is not None and len(ids) != n_brain:
        raise RdmError(f"--ids {cfg.ids} lists {len(ids)} stimuli; the RDMs have {n_brain}")
    return targets, ids, n_brain


def _match_stimuli(cfg: RsaConfig, ds, ids: list[str] | None, n_brain: int
                   ) -> tuple[StimulusPlan, list[int] | None, list[str]]:
    """The dataset's stimuli matched to the brain RDMs' order: (plan, RDM index of each, notes)."""
    what = f"--ids {cfg.ids}" if ids is not None else "the brain RDMs"
    splan = plan_stimuli(ds, cfg.key, cfg.pool, ids, cfg.intersect, what, cfg.runs_column)
    if ids is None and len(splan.ids) != n_brain:
        raise RdmError(f"the dataset has {len(splan.ids)} stimuli ({splan.key}) and the brain RDMs {n_brain}; "
                       "with no --ids the RDMs must follow the dataset's stimuli in order. Give --ids FILE.")
    notes = []
    if splan.dropped:
        notes.append(f"--intersect: {len(splan.dropped)} stimuli present on one side only were dropped; "
                     f"{len(splan.ids)} remain")
    return splan, ([ids.index(s) for s in splan.ids] if ids is not None else None), notes


def check_varies(cfg: RsaConfig, vectors: np.ndarray, what: str, names: list[str]) -> None:
    """A constant RDM has no correlation with anything: refuse it rather than report a score (0, or NaN) that
    means nothing. A cosine comparison is defined for it."""
    if not get_comparison(cfg.compare).needs_variance:
        return
    flat = [n for n, v in zip(names, np.atleast_2d(vectors), strict=True) if np.ptp(v) == 0]
    if flat:
        raise RdmError(f"{what}: the RDM of {flat[:5]} is constant (every dissimilarity equal), so its "
                       f"--compare {cfg.compare} score is undefined. Leave it out, or compare with --compare cosine.")


def _prepare_target(cfg: RsaConfig, t: BrainTarget, order: list[int] | None) -> PreparedTarget:
    """One target after the NaN policy and the transform, with its noise ceiling."""
    vec, keep, subjects, notes = _nan_policy(cfg, t, _subset(t, order))
    vec = transform(vec, cfg.transform, cfg.transform_options)
    check_varies(cfg, vec, t.source, subjects)
    ceiling = None
    if cfg.noise_ceiling and len(vec) > 1:
        ceiling = noise_ceiling(vec, cfg.compare, cfg.convention)
    elif cfg.noise_ceiling:
        notes.append(f"{t.name}: one RDM, no noise ceiling (it needs several subjects)")
    if cfg.bootstrap and not keep.all() and cfg.bootstrap_over != "subjects":
        raise RdmError("--bootstrap over stimuli needs every stimulus pair; with --nan-policy drop-pairs use "
                       "--bootstrap-over subjects")
    return PreparedTarget(name=t.name, source=t.source, subjects=subjects, vectors=vec, keep=keep, ceiling=ceiling,
                          notes=notes)


def plan_rsa(cfg: RsaConfig, ds, hooks: list[str] | None = None) -> RsaPlan:
    """Every check of the inputs; nothing is read from the hooks here."""
    if cfg.bootstrap and cfg.bootstrap_over != "subjects" and not get_comparison(cfg.compare).entrywise:
        raise RdmError(f"--bootstrap over stimuli is not available for --compare {cfg.compare}; "
                       "use --bootstrap-over subjects")
    targets, ids, n_brain = _brain_targets(cfg)
    splan, order, notes = _match_stimuli(cfg, ds, ids, n_brain)
    prepared = [_prepare_target(cfg, t, order) for t in targets]
    return RsaPlan(stimuli=splan, targets=prepared, notes=notes + [n for t in prepared for n in t.notes],
                   baselines=_baselines(cfg, order, n_brain))


def _baselines(cfg: RsaConfig, order: list[int] | None, n_brain: int) -> dict[str, np.ndarray]:
    """Each fixed model RDM of ``--baselines`` (named FILE:NAME), condensed in the order the brain RDMs are used."""
    out = {}
    for uri in cfg.baselines:
        b = load_brain_rdms(uri, cfg.storage)
        if b.rdms.shape[1] != n_brain:
            raise RdmError(f"--baselines {b.source}: {b.rdms.shape[1]} stimuli; the brain RDMs have {n_brain}")
        vec = condensed(_subset(b, order))
        for name, v in zip(b.subjects, vec, strict=True):
            out[f"{b.name}:{name}" if len(vec) > 1 else b.name] = v
    return out


def _baseline_rows(cfg: RsaConfig, plan: RsaPlan) -> list[dict]:
    """Every baseline RDM scored against every target exactly as a hook is (transform, comparison, convention)."""
    rows = []
    for name, vec in plan.baselines.items():
        for t in plan.targets:
            ts, _ = _score_target(dataclasses.replace(cfg, bootstrap=0, permutations=0), t, vec)
            rows.append({"baseline": name, "target": t.name, "score": ts.mean, "sem": ts.sem,
                         "method": cfg.compare, "convention": cfg.convention})
    return rows


@dataclass(kw_only=True)
class TargetScores(JsonRecord):
    target: str
    subjects: list[str]
    scores: list[float]  #: per subject (squared under --convention net2brain)
    mean: float
    sem: float | None
    t_p_value: float | None  #: one-sample t-test of the subject scores against 0 (Net2Brain's "Significance")
    ci_low: float | None = None
    ci_high: float | None = None
    p_value: float | None = None  #: permutation p-value


@dataclass(kw_only=True)
class HookScores(JsonRecord):
    hook: str
    n_stimuli: int
    targets: list[TargetScores]
    seconds: float = 0.0

    @classmethod
    def from_json(cls, d: dict) -> HookScores:
        return cls(hook=d["hook"], n_stimuli=d["n_stimuli"], targets=[TargetScores.from_json(t) for t in d["targets"]],
                   seconds=d.get("seconds", 0))


def _model_vector(task: HookTask[RsaConfig, RsaPlan], hook: str) -> tuple[np.ndarray, np.ndarray]:
    cfg, sp = task.cfg, task.plan.stimuli
    x = load_items(task.ds, hook, sp, cfg.batch_size)
    square = rdm(x, cfg.rdm, cfg.convention, standardize=cfg.standardize, conditions=sp.conditions, runs=sp.runs)
    return square, condensed(square)


def _score_target(cfg: RsaConfig, t: PreparedTarget, model: np.ndarray) -> tuple[TargetScores, np.ndarray | None]:
    squared = get_convention(cfg.convention).squared
    opts = cfg.transform_options
    if opts is not None:  # one model RDM: quantiles pooled over a stack of one are its own
        opts = dataclasses.replace(opts, pooled_quantiles=False)
    mv = transform(model[t.keep][None], cfg.transform, opts)[0]
    s = get_comparison(cfg.compare).score(mv[None], t.vectors)[0]
    s = s ** 2 if squared else s
    many = len(s) > 1
    ts = TargetScores(target=t.name, subjects=t.subjects, scores=s.tolist(), mean=float(s.mean()),
                      sem=_sem(s) if many else None, t_p_value=_t_p_value(s) if many else None)
    boot = None
    if cfg.bootstrap:
        boot = bootstrap(mv, t.vectors, cfg.compare, cfg.bootstrap, cfg.seed,
                         cfg.bootstrap_over if many else "stimuli", squared)
        ts.ci_low, ts.ci_high = percentile_ci(boot)
    if cfg.permutations:
        null = permutation_null(mv, t.vectors, cfg.compare, cfg.permutations, cfg.seed, squared)
        ts.p_value = permutation_p(ts.mean, null)
    return ts, boot


def _sem(s: np.ndarray) -> float:
    """scipy.stats.sem, without its per-call overhead (~3 ms: a third of a small RSA sweep's scoring)."""
    return float(s.std(ddof=1) / np.sqrt(len(s)))


def _t_p_value(s: np.ndarray) -> float:
    """Two-sided one-sample t-test against 0: scipy.stats.ttest_1samp(s, 0).pvalue, from Student's t CDF."""
    from scipy.special import stdtr

    with np.errstate(divide="ignore", invalid="ignore"):
        t = s.mean() / (s.std(ddof=1) / np.sqrt(len(s)))
    return float(2 * stdtr(len(s) - 1, -abs(t)))


def rsa_hook(task: HookTask[RsaConfig, RsaPlan], hook: str) -> HookScores:
    """One hook of the pinned dataset against every target; its RDM and bootstrap values beside its result."""
    cfg, out = task.cfg, task.out
    square, model = _model_vector(task, hook)
    check_varies(cfg, model, f"hook {hook}", [hook])
    if square.shape[0] <= PLOT_RDM_MAX:
        out.storage.put_bytes(f"{hook}-rdm.npy", npy_bytes(square.astype(np.float32)))
    scores, boots = [], []
    for t in task.plan.targets:
        ts, boot = _score_target(cfg, t, model)
        scores.append(ts)
        boots.append(boot)
    if cfg.bootstrap:
        out.storage.put_bytes(f"{hook}-boot.npy", npy_bytes(np.stack(boots)))
    log.info("%s: %s", hook, ", ".join(f"{s.target} {s.mean:.4f}" for s in scores))
    return HookScores(hook=hook, n_stimuli=len(square), targets=scores)


def _rows(cfg: RsaConfig, plan: RsaPlan, hooks: list[str], results: dict[str, HookScores]) -> list[dict]:
    rows = []
    for h in hooks:
        for ts, t in zip(results[h].targets, plan.targets, strict=True):
            base = {"hook": h, "layer_index": layer_index(h), "target": ts.target, "method": cfg.compare,
                    "rdm": cfg.rdm, "convention": cfg.convention}
            nc_lo, nc_hi = t.ceiling if t.ceiling else (None, None)
            if len(ts.scores) > 1:
                for subj, s in zip(ts.subjects, ts.scores, strict=True):
                    rows.append({**base, "subject": subj, "score": s, "ci_low": None, "ci_high": None,
                                 "p_value": None, "t_p_value": None, "sem": None, "noise_ceiling_low": None,
                                 "noise_ceiling_high": None})
            rows.append({**base, "subject": "all", "score": ts.mean, "ci_low": ts.ci_low, "ci_high": ts.ci_high,
                         "p_value": ts.p_value, "t_p_value": ts.t_p_value, "sem": ts.sem,
                         "noise_ceiling_low": nc_lo, "noise_ceiling_high": nc_hi})
    return rows


def _paired(cfg: RsaConfig, plan: RsaPlan, hooks: list[str], results: dict[str, HookScores], out: Results
            ) -> list[dict]:
    """Each target's best hook against every other hook, on the same subjects and bootstrap resamples."""
    rows = []
    boots = {h: read_npy(out.storage.get_bytes(f"{HOOKS}/{h}-boot.npy")) for h in hooks} if cfg.bootstrap else {}
    for ti, t in enumerate(plan.targets):
        best = max(hooks, key=lambda h: results[h].targets[ti].mean)
        for h in hooks:
            if h == best:
                continue
            a, b = np.asarray(results[best].targets[ti].scores), np.asarray(results[h].targets[ti].scores)
            pt = paired_test(a, b, boots[best][ti] if boots else None, boots[h][ti] if boots else None)
            rows.append({"target": t.name, "hook": best, "hook2": h, **dataclasses.asdict(pt)})
    return rows


@dataclass(kw_only=True)
class RsaSummary(RunSummary, JsonRecord):
    hooks: list[str]
    n_stimuli: int
    stimulus_key: str
    rdm: str
    compare: str
    convention: dict
    methods: dict
    inference: dict
    targets: dict
    notes: list[str]
    out: str = ""


def _summary(cfg, recorded: dict, hooks, plan, results) -> RsaSummary:
    conv = get_convention(cfg.convention)
    targets = {}
    for ti, t in enumerate(plan.targets):
        targets[t.name] = {
            "source": t.source, "subjects": len(t.subjects),
            "noise_ceiling": {"low": t.ceiling[0], "high": t.ceiling[1],
                              "convention": cfg.convention} if t.ceiling else None,
            "hooks": {h: {k: getattr(results[h].targets[ti], k) for k in
                          ("mean", "sem", "t_p_value", "ci_low", "ci_high", "p_value")} for h in hooks}}
    return RsaSummary(
        **recorded, hooks=hooks,
        n_stimuli=len(plan.stimuli.ids), stimulus_key=plan.stimuli.key, rdm=cfg.rdm, compare=cfg.compare,
        convention={"name": conv.name, "describe": conv.describe, "reference": conv.reference},
        methods={"rdm": get_rdm_method(cfg.rdm).describe[cfg.convention],
                 "compare": get_comparison(cfg.compare).describe,
                 "rsatoolbox_compare": get_comparison(cfg.compare).rsatoolbox_name,
                 "transform": cfg.transform, "standardize": cfg.standardize, "pool": plan.stimuli.pool},
        inference={"bootstrap": cfg.bootstrap, "bootstrap_over": cfg.bootstrap_over, "ci": "95% percentile",
                   "permutations": cfg.permutations, "p_value": "one-sided, (1 + #null >= observed) / (1 + n)",
                   "seed": cfg.seed,
                   "t_p_value": "one-sample t-test of subject scores against 0 (scipy.stats.ttest_1samp)"},
        targets=targets, notes=plan.notes)


def _describe(cfg: RsaConfig, plan: RsaPlan, ds, hooks: list[str]) -> str:
    return (f"RSA {cfg.rdm}/{cfg.compare} ({cfg.convention}) of {', '.join(hooks)} (version {ds.version}) against "
            f"{', '.join(t.name for t in plan.targets)} over {len(plan.stimuli.ids)} stimuli")


def _assemble(run: Assembly[RsaConfig, RsaPlan], results: dict[str, HookScores]) -> RsaSummary:
    cfg, plan, hooks, out = run.cfg, run.plan, run.hooks, run.out
    rows = _rows(cfg, plan, hooks, results)
    out.table("results.parquet", pa.Table.from_pylist(rows))
    paired = _paired(cfg, plan, hooks, results, out) if len(hooks) > 1 else []
    if paired:
        out.table("paired.parquet", pa.Table.from_pylist(paired))
    if plan.baselines:
        out.table("baselines.parquet", pa.Table.from_pylist(_baseline_rows(cfg, plan)))
    write_rsa_plots(out, cfg, hooks, rows, plan, {h: out.storage.exists(f"{HOOKS}/{h}-rdm.npy") for h in hooks})
    summary = _summary(cfg, run.recorded, hooks, plan, results)
    summary.out = out.display()
    return summary


RSA = HookAnalysis(name="align", command="align rsa", neutral=RSA_NEUTRAL, plan=plan_rsa, hook=rsa_hook,
                   outcome=HookScores, assemble=_assemble, summary=RsaSummary, describe=_describe)


def run(cfg: RsaConfig) -> RsaSummary:
    """RSA of ``cfg.hooks`` against ``cfg.brain`` (or resume a killed run); returns what ``summary.json`` holds.

    Example::

        run(RsaConfig(data="runs/resnet78", hooks=["layer*"], brain=["fmri_IT_RDMs.npz"], noise_ceiling=True,
                      convention="net2brain", standardize=True, out="runs/rsa"))

    A pattern in ``--data`` (``zoo/*``) runs every matching dataset and compares them (``sweep.py``).
    """
    if is_pattern(cfg.data):
        return sweep_brain(cfg, run, "align rsa", ("target",))
    return run_hook_analysis(RSA, cfg)
