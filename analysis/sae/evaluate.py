"""``actlake sae evaluate``: an SAE's evaluation suite on stored activations (core metrics, sparse probing,
absorption, synthetic ground truth), by default on the examples its training held out.

Each metric is a file of ``analysis/sae/evals/`` registered by name; this module opens the SAE and the dataset,
chooses the rows, and writes what each metric returns: ``<metric>.json``, its tables and plots, ``summary.json``
and ``report.html``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pyarrow as pa
import torch
from simple_parsing import field

from analysis.common.cost import duration
from analysis.common.inputs import DatasetInput, RunSummary, take_inputs
from analysis.common.runstart import RunKind, StartedRun, run_start
from analysis.sae.evals import registry
from analysis.sae.evals.estimate import estimate_suite
from analysis.sae.evals.registry import EvalInputError, EvalInputs, get_metric
from analysis.sae.io import (
    OTHER,
    SaeRowsError,
    TrainedOn,
    load_sae,
    require_kept_rows,
    rows_min_position,
    sae_source,
    trained_on,
)
from analysis.sae.split import heldout_rows, plan_split
from shards.columns import POSITION
from shards.config import check_choices, nested, parse_count, split_list, take_credentials
from shards.errors import ConfigError
from shards.records import JsonRecord
from shards.storage import Storage, StorageOptions

log = logging.getLogger("actlake.sae")
AUTO = "auto"


@dataclass
class SaeEvaluateConfig:
    """Evaluate a trained SAE on stored activations: core metrics, sparse probing, absorption, synthetic truth."""

    sae: str = "runs/sae"
    """The trained SAE's URI (cfg.json + sae_weights.safetensors)."""

    data: DatasetInput | None = field(default=None, metavar="URI[@vN]")
    """Activation dataset (default: the one the SAE was trained on, at the version it was trained on; refused if
    its URI now holds another dataset); URI@vN reads version N, URI alone its latest, @vN alone version N of the
    SAE's dataset."""

    hook: str = ""
    """Hook to evaluate on (default: the SAE's)."""

    suite: list[str] = field(default_factory=lambda: [AUTO], nargs="*", metavar="METRIC[,METRIC...]",
                             choices=registry.METRICS.choices(AUTO),
                             help="Metrics (one file each in analysis/sae/evals/): %(choices)s; auto: every one this "
                                  "dataset has the inputs for (labels, token ids with a tokenizer, synthetic ground "
                                  "truth).")

    rows: Literal["heldout", "all", "auto"] = AUTO
    """Which rows core and synthetic read: heldout (the examples the SAE's training held out; needs the SAE's
    dataset), all, or auto (heldout when the SAE records a split of this dataset, else all)."""

    max_rows: str = "64k"
    """At most this many rows for core and synthetic (a seeded sample)."""

    min_position: int | None = None
    """Read rows at positions >= P only (default: the SAE's own `sae train --min-position`, the rows it was trained
    on; 0: every row)."""

    labels: list[str] = field(default_factory=list, nargs="*", metavar="COLUMN[,COLUMN...]")
    """sparse_probing: metadata columns to probe (default: every column constant within an example with 2+ classes)."""

    tokenizer: str = ""
    """absorption: tokenizer directory or installed model package (default: the dataset's model, offline)."""

    seed: int = 0
    """Seed of row samples, folds and token splits."""

    out: str = "runs/sae-eval"
    """Output folder or URI."""

    explanations: str = ""
    """An `actlake sae explain` output of this SAE, scored by `actlake sae score`: its scores (mean per scorer
    beside the random-explanation baseline, and their distribution) join the summary as ``autointerp``."""

    overwrite: bool = field(default=False, action="store_true")
    """Replace a different run already at --out."""

    storage: StorageOptions = field(default_factory=StorageOptions)
    """Storage options for --sae, --data and --out."""

    def __post_init__(self) -> None:
        self.storage = nested(self.storage, StorageOptions)
        take_credentials(self, "sae", "out", "explanations")
        take_inputs(self)
        self.suite, self.labels = split_list(self.suite), split_list(self.labels)
        if self.min_position is not None and self.min_position < 0:
            raise ConfigError(f"--min-position cannot be negative, got {self.min_position}")
        check_choices(self)
        try:
            parse_count(self.max_rows)
        except ConfigError as exc:
            raise ConfigError(f"--max-rows: {exc}") from None
        import analysis.sae.evals  # noqa: F401 - registers the metrics

        for name in self.suite:
            if name != AUTO:
                get_metric(name)  # an unknown metric fails now, naming the known ones


NEUTRAL = frozenset({"out", "overwrite", "storage"})
#: a rerun of a finished evaluation returns it; an unfinished one starts again (its metrics write whole files)
KIND = RunKind("sae evaluate", NEUTRAL, lock="SAE evaluation output", resume_marker=None)


@dataclass(kw_only=True)
class SaeEvaluateSummary(RunSummary, JsonRecord):
    """``summary.json``: ``inputs["crosscoder_data"]`` is a model-diffing crosscoder's second dataset."""

    sae: str
    hook: str
    rows: str  #: which rows core/synthetic read ("heldout" or "all") and how many
    metrics: dict  #: metric -> its summary
    skipped: dict  #: metric -> why it did not run (auto suite only)
    seconds: float
    out: str


def _eval_rows(cfg: SaeEvaluateConfig, record: TrainedOn, ds, meta, min_position: int = 0) -> tuple[np.ndarray, str]:
    """The rows core and synthetic read (at positions >= ``min_position``), and how they were chosen."""
    split = record.eval_split
    same = record.dataset_id == ds.dataset_id
    want = cfg.rows if cfg.rows != AUTO else ("heldout" if same and split.get("heldout_examples") else "all")
    if want == "heldout":
        if not same or not split.get("heldout_examples"):
            raise EvalInputError(f"--rows heldout: the SAE records no held-out split of {ds.storage.display()} "
                                 "(trained on another dataset, or with --eval-fraction 0); use --rows all")
        rec, held = plan_split(meta, split["fraction"], split["group"])
        if rec.digest != split["digest"]:
            raise EvalInputError(f"the held-out examples of {ds.storage.display()} differ from the ones the SAE's "
                                 f"training held out (the dataset changed since): use --data {record.data} (the "
                                 "version it was trained on) or --rows all")
        rows = heldout_rows(meta, held, min_position)
    else:
        rows = np.arange(meta.num_rows)
        if min_position:
            rows = rows[meta.column(POSITION).fill_null(-1).to_numpy() >= min_position]
    cap = parse_count(cfg.max_rows)
    if len(rows) > cap:
        rows = np.sort(np.random.default_rng(cfg.seed + 7_919).choice(rows, cap, replace=False))
    return rows, want


def _reader(ds, other, record: TrainedOn, hook: str):
    """rows -> {"x": (n, d_in) float32, column: values} for the SAE's input hooks (concatenated for a
    crosscoder; a model-diffing crosscoder's other:HOOK from ``other``, its second dataset, pinned)."""
    hooks = list(record.in_hooks) or [hook]
    if other is not None:
        from analysis.sae.paired import PairedDataset

        ds = PairedDataset(ds, other, [])

    outs = list(record.out_hooks) or hooks
    transcoder = outs != hooks

    def cat(batch: dict, names: list[str]) -> torch.Tensor:
        parts = [batch[h].reshape(len(batch[h]), -1) for h in names]
        return parts[0] if len(parts) == 1 else torch.cat(parts, 1)

    def read(rows: np.ndarray, columns: list[str]) -> dict:
        batch = ds.take(rows, hooks=list(dict.fromkeys([*hooks, *outs])), columns=columns, dtype="float32")
        got = {"x": cat(batch, hooks), **({"y": cat(batch, outs)} if transcoder else {})}
        return {**got, **{c: v for c, v in batch.items() if c in columns}}

    return read


def _token_text(cfg: SaeEvaluateConfig, ds):
    from analysis.sae.dashboard.run import _Tokens

    tokens = _Tokens(ds, cfg.tokenizer)
    return tokens if tokens.tok is not None else None


def _synthetic(ds):
    from analysis.sae.synthetic import TRUTH_ARTIFACT, truth_from_bytes

    if TRUTH_ARTIFACT not in ds.manifest.artifacts:
        return None
    return truth_from_bytes(ds.read_artifact(TRUTH_ARTIFACT, "Make it again with `actlake sae synth`."))


def _suite(cfg: SaeEvaluateConfig, inputs: EvalInputs) -> tuple[list[str], dict]:
    """The metrics to run and, for ``auto``, the ones left out with the reason."""
    if AUTO not in cfg.suite:
        return list(dict.fromkeys(cfg.suite)), {}
    return registry.auto_suite(inputs)  # each metric says what it is missing (its own file)


def run(cfg: SaeEvaluateConfig) -> SaeEvaluateSummary:
    """Run the suite; a rerun of a finished run returns its summary.

    Example::

        run(SaeEvaluateConfig(sae="runs/minilm-topk", suite=["core", "sparse_probing"], out="runs/topk-eval"))
    """
    sae = load_sae(cfg.sae, cfg.storage)
    record = trained_on(sae)
    if cfg.data is None and record.data is None:
        raise ConfigError(f"{sae_source(cfg.sae, cfg.storage)} does not say which dataset it was trained on: give "
                          "--data")
    # the SAE's dataset (and a model-diffing crosscoder's second one) at the versions it was trained on by default
    with run_start(cfg, KIND, defaults=record.defaults(sae_source(cfg.sae, cfg.storage))) as started:
        return _run(cfg, sae, record, started)


def _hook(cfg: SaeEvaluateConfig, sae, record: TrainedOn, ds) -> str:
    """The hook evaluated, checked against the dataset (its hooks and width) before any row is read."""
    hook = cfg.hook or record.hook
    if not hook:
        raise ConfigError(f"{sae_source(cfg.sae, cfg.storage)} does not name its hook: give --hook")
    hooks = [h for h in record.in_hooks or (hook,) if not h.startswith(OTHER)]
    missing = [h for h in hooks if h not in ds.hooks]
    if missing:
        raise ConfigError(f"hook(s) {missing} not in {ds.storage.display()} (it has {ds.hooks}); give --hook")
    width = sum(ds.hook_spec(h).numel for h in hooks)
    if width != sae.d_in and record.crosscoder is None:
        raise ConfigError(f"the SAE reads {sae.d_in} dimensions, {hooks} of {ds.storage.display()} hold {width}")
    return hook


def _autointerp(cfg: SaeEvaluateConfig, sae) -> dict:
    """``--explanations``: the `sae score` summary under a `sae explain` output of this SAE."""
    from analysis.interp.files import explained_by
    from analysis.sae.dashboard.collect import sae_digest

    src = Storage(cfg.explanations, cfg.storage)
    try:
        rows, scored = explained_by(src, sae_digest(sae), "--explanations")
    except ValueError as e:
        raise EvalInputError(str(e)) from None
    if scored is None:
        raise EvalInputError(f"--explanations {src.display()}: not scored, or scored before the explanations were "
                             f"made again: run `actlake sae score --explanations {cfg.explanations}` first")
    return {"explainer": rows[0]["model"] if rows else None, "scorer": scored["model"],
            "latents": scored["latents"], "scorers": scored["scorers"]}


def _run(cfg: SaeEvaluateConfig, sae, record: TrainedOn, started: StartedRun) -> SaeEvaluateSummary:
    t0 = time.perf_counter()
    ds, out = started.ds, started.out
    hook = _hook(cfg, sae, record, ds)
    started.hooks = [hook]
    if started.state == "done":
        return SaeEvaluateSummary.from_json(started.rundir.summary())
    meta = ds.metadata_table([c for c in ds.schema.check_columns(None, ds.storage.display())])
    min_position = rows_min_position(sae, cfg.min_position)  # the rows it was trained on, unless overridden
    try:
        require_kept_rows(ds, min_position)
    except SaeRowsError as exc:
        raise EvalInputError(str(exc)) from None
    rows, which = _eval_rows(cfg, record, ds, meta, min_position)
    read = _reader(ds, started.inputs.get("crosscoder_data"), record, hook)
    inputs = EvalInputs(sae=sae, hook=hook, rows=rows, read=read,
                        columns=meta.column_names, meta=meta, token_text=_token_text(cfg, ds),
                        synthetic=_synthetic(ds), seed=cfg.seed, labels=cfg.labels, min_position=min_position,
                        progress=lambda m: log.info("%s", m))
    names, skipped = _suite(cfg, inputs)
    autointerp = _autointerp(cfg, sae) if cfg.explanations else None  # refused before the metrics run
    started.begin(cfg, {"seed": cfg.seed})
    cost = estimate_suite(names, inputs)
    log.info("%s", cost.line())
    t_suite, results = time.perf_counter(), {}
    for i, name in enumerate(names):
        if name in cost.parts:
            log.info("%s (%d of %d): estimated %s", name, i + 1, len(names), duration(cost.parts[name]))
        t = time.perf_counter()
        outcome = registry.get_metric(name).fn(inputs)
        outcome.summary["seconds"] = round(time.perf_counter() - t, 2)
        outcome.summary["estimated_seconds"] = round(cost.parts[name], 2) if name in cost.parts else None
        out.json(f"{name}.json", outcome.summary)
        for fname, table in outcome.tables.items():
            out.table(fname, pa.Table.from_pylist(table) if isinstance(table, list) else table)
        for fname, fig in outcome.figures.items():
            out.figure(fname, fig)
        results[name] = outcome.summary
        log.info("%s: %s", name, ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                         for k, v in outcome.summary.items() if not isinstance(v, (dict, list))))
    if autointerp is not None:
        out.json("autointerp.json", autointerp)
        results["autointerp"] = autointerp
    summary = SaeEvaluateSummary(**started.recorded(), sae=cfg.sae, hook=hook, rows=f"{which} ({len(rows)})",
                                 metrics=results, skipped=skipped, seconds=round(time.perf_counter() - t0, 2),
                                 out=out.display(), cost=cost.record(time.perf_counter() - t_suite))
    log.info("took %.0f s (estimated %.0f s)", summary.cost["seconds"], cost.seconds)
    started.rundir.finish(summary.to_json())
    return summary


CONFIG = SaeEvaluateConfig
