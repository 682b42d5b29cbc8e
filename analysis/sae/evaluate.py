"""``actlake sae evaluate``: an SAE's evaluation suite on stored activations (core metrics, sparse probing,
absorption, synthetic ground truth), by default on the examples its training held out.

Each metric is a file of ``analysis/sae/evals/`` registered by name; this module opens the SAE and the dataset,
chooses the rows, and writes what each metric returns: ``<metric>.json``, its tables and plots, ``summary.json``
and ``report.html``.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pyarrow as pa
import torch
from simple_parsing import field

from analysis.common.results import Results
from analysis.common.rundir import RunDir, RunRecord, fingerprint_of, output_lock, run_settings
from analysis.sae.evals import registry
from analysis.sae.evals.registry import EvalInputError, EvalInputs, get_metric
from analysis.sae.io import SaeRowsError, require_kept_rows, rows_min_position
from analysis.sae.split import heldout_rows, plan_split
from shards.config import check_choices, nested, parse_count, split_list, take_credentials
from shards.errors import ConfigError
from shards.manifest import check_version
from shards.records import JsonRecord
from shards.storage import StorageOptions

log = logging.getLogger("actlake.sae")
AUTO = "auto"


@dataclass
class SaeEvaluateConfig:
    """Evaluate a trained SAE on stored activations: core metrics, sparse probing, absorption, synthetic truth."""

    sae: str = "runs/sae"
    """The trained SAE's URI (cfg.json + sae_weights.safetensors)."""

    data: str = ""
    """Activation dataset URI (default: the one the SAE was trained on)."""

    data_version: int | None = None
    """Read this version of the dataset (default: the latest)."""

    hook: str = ""
    """Hook to evaluate on (default: the SAE's)."""

    suite: list[str] = field(default_factory=lambda: [AUTO], nargs="*", metavar="METRIC[,METRIC...]")
    """Metrics: core, sparse_probing, absorption, synthetic; auto: core and every other one this dataset has the
    inputs for (labels, token ids with a tokenizer, synthetic ground truth)."""

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

    overwrite: bool = field(default=False, action="store_true")
    """Replace a different run already at --out."""

    storage: StorageOptions = field(default_factory=StorageOptions)
    """Storage options for --sae, --data and --out."""

    def __post_init__(self) -> None:
        self.storage = nested(self.storage, StorageOptions)
        take_credentials(self, "sae", "data", "out")
        self.suite, self.labels = split_list(self.suite), split_list(self.labels)
        if self.data_version is not None:
            self.data_version = check_version(self.data_version)
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


NEUTRAL = frozenset({"out", "overwrite", "storage", "data_version"})


@dataclass(kw_only=True)
class SaeEvaluateSummary(JsonRecord):
    sae: str
    dataset: str
    dataset_id: str
    dataset_version: int
    hook: str
    rows: str  #: which rows core/synthetic read ("heldout" or "all") and how many
    metrics: dict  #: metric -> its summary
    skipped: dict  #: metric -> why it did not run (auto suite only)
    seconds: float
    out: str


def _eval_rows(cfg: SaeEvaluateConfig, sae, ds, meta, min_position: int = 0) -> tuple[np.ndarray, str]:
    """The rows core and synthetic read (at positions >= ``min_position``), and how they were chosen."""
    ours = sae.loaded_cfg.get("actlake") or {}
    split = ours.get("eval_split") or {}
    same = ours.get("dataset_id") == ds.dataset_id
    want = cfg.rows if cfg.rows != AUTO else ("heldout" if same and split.get("heldout_examples") else "all")
    if want == "heldout":
        if not same or not split.get("heldout_examples"):
            raise EvalInputError(f"--rows heldout: the SAE records no held-out split of {ds.storage.display()} "
                                 "(trained on another dataset, or with --eval-fraction 0); use --rows all")
        rec, held = plan_split(meta, split["fraction"], split["group"])
        if rec.digest != split["digest"]:
            raise EvalInputError(f"the held-out examples of {ds.storage.display()} differ from the ones the SAE's "
                                 "training held out (the dataset changed since): use --data-version "
                                 f"{ours.get('dataset_version')} or --rows all")
        rows = heldout_rows(meta, held, min_position)
    else:
        rows = np.arange(meta.num_rows)
        if min_position:
            rows = rows[meta.column("position").fill_null(-1).to_numpy() >= min_position]
    cap = parse_count(cfg.max_rows)
    if len(rows) > cap:
        rows = np.sort(np.random.default_rng(cfg.seed + 7_919).choice(rows, cap, replace=False))
    return rows, want


def _reader(ds, sae, hook: str, storage: StorageOptions):
    """rows -> {"x": (n, d_in) float32, column: values} for the SAE's input hooks (concatenated for a
    crosscoder; a model-diffing crosscoder's other:HOOK from the second dataset it records)."""
    ours = sae.loaded_cfg.get("actlake") or {}
    hooks = ours.get("in_hooks") or [hook]
    if ours.get("crosscoder_data"):
        from analysis.sae.paired import PairedDataset
        from shards.reader import open_dataset

        ds = PairedDataset(ds, open_dataset(ours["crosscoder_data"], storage), [])

    outs = ours.get("out_hooks") or hooks
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
    names, skipped = ["core"], {}
    has_tokens = bool((inputs.meta.column("token_id").fill_null(-1).to_numpy() >= 0).any())
    checks = {"sparse_probing": (bool(inputs.labels) or _has_labels(inputs), "no label column"),
              "absorption": (has_tokens and inputs.token_text is not None, "no token ids with a tokenizer"),
              "synthetic": (inputs.synthetic is not None, "not a synthetic dataset")}
    for name, (ok, why) in checks.items():
        (names.append(name) if ok else skipped.__setitem__(name, why))
    return names, skipped


def _has_labels(inputs: EvalInputs) -> bool:
    from analysis.sae.evals.sparse_probing import label_columns

    return bool(label_columns(inputs.meta, []))


def run(cfg: SaeEvaluateConfig) -> SaeEvaluateSummary:
    """Run the suite; a rerun of a finished run returns its summary.

    Example::

        run(SaeEvaluateConfig(sae="runs/minilm-topk", suite=["core", "sparse_probing"], out="runs/topk-eval"))
    """
    out = Results(cfg.out, cfg.storage)
    with output_lock(out.storage, "SAE evaluation output"):
        return _run(cfg, out)


def _open(cfg: SaeEvaluateConfig):
    from analysis.sae.io import load_sae, trained_on
    from shards.reader import open_dataset

    sae = load_sae(cfg.sae, cfg.storage)
    data, hook = trained_on(sae)
    if not (cfg.data or data):
        raise ConfigError(f"the SAE at {cfg.sae} does not say which dataset it was trained on: give --data")
    ds = open_dataset(cfg.data or data, cfg.storage, cfg.data_version)
    hook = cfg.hook or hook
    ours = sae.loaded_cfg.get("actlake") or {}
    hooks = [h for h in ours.get("in_hooks") or [hook] if not h.startswith("other:")]
    missing = [h for h in hooks if h not in ds.hooks]
    if missing:
        raise ConfigError(f"hook(s) {missing} not in {ds.storage.display()} (it has {ds.hooks}); give --hook")
    width = sum(ds.hook_spec(h).numel for h in hooks)
    if width != sae.d_in and not ours.get("crosscoder_data"):
        raise ConfigError(f"the SAE reads {sae.d_in} dimensions, {hooks} of {ds.storage.display()} hold {width}")
    return sae, ds, hook


def _run(cfg: SaeEvaluateConfig, out: Results) -> SaeEvaluateSummary:
    t0 = time.perf_counter()
    sae, ds, hook = _open(cfg)
    settings = run_settings(cfg, NEUTRAL, dataset_id=ds.dataset_id, dataset_version=ds.version)
    rundir = RunDir(out.storage, "summary.json", command="sae evaluate")
    if rundir.state(settings, cfg.overwrite) == "done":
        return SaeEvaluateSummary.from_json(rundir.summary())
    meta = ds.metadata_table([c for c in ds.schema.check_columns(None, ds.storage.display())])
    min_position = rows_min_position(sae, cfg.min_position)  # the rows it was trained on, unless overridden
    try:
        require_kept_rows(ds, min_position)
    except SaeRowsError as exc:
        raise EvalInputError(str(exc)) from None
    rows, which = _eval_rows(cfg, sae, ds, meta, min_position)
    inputs = EvalInputs(sae=sae, hook=hook, rows=rows, read=_reader(ds, sae, hook, cfg.storage),
                        columns=meta.column_names, meta=meta, token_text=_token_text(cfg, ds),
                        synthetic=_synthetic(ds), seed=cfg.seed, labels=cfg.labels, min_position=min_position,
                        progress=lambda m: log.info("%s", m))
    names, skipped = _suite(cfg, inputs)
    rundir.start(RunRecord(fingerprint=fingerprint_of(settings), settings=settings,
                           config=dataclasses.asdict(cfg), dataset=ds.manifest.ref(ds.storage.display(), [hook]),
                           seeds={"seed": cfg.seed}))
    results = {}
    for name in names:
        t = time.perf_counter()
        outcome = registry.get_metric(name).fn(inputs)
        outcome.summary["seconds"] = round(time.perf_counter() - t, 2)
        out.json(f"{name}.json", outcome.summary)
        for fname, table in outcome.tables.items():
            out.table(fname, pa.Table.from_pylist(table) if isinstance(table, list) else table)
        for fname, fig in outcome.figures.items():
            out.figure(fname, fig)
        results[name] = outcome.summary
        log.info("%s: %s", name, {k: v for k, v in outcome.summary.items() if not isinstance(v, (dict, list))})
    summary = SaeEvaluateSummary(sae=cfg.sae, dataset=ds.storage.display(), dataset_id=ds.dataset_id,
                                 dataset_version=ds.version, hook=hook, rows=f"{which} ({len(rows)})",
                                 metrics=results, skipped=skipped, seconds=round(time.perf_counter() - t0, 2),
                                 out=out.display())
    rundir.finish(summary.to_json())
    return summary


CONFIG = SaeEvaluateConfig
