"""``actlake sae eval``, its analysis part: the config, the run's start (the SAE, the dataset it was trained on
pinned at the version it read, the output's lock, ``run.json``, resume, ``--overwrite``) and the numbers from the
per-token dataset the extraction stores (CE loss recovered, KL, FVU, L0 per position).

The model runs in between: ``cluster/sae_eval.py`` composes this with an extraction (``ingest``), which
``analysis`` does not import (docs/architecture.md, "The model in the loop")."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from simple_parsing import field

from analysis.common.inputs import DatasetInput, RunSummary, take_inputs
from analysis.common.results import Results
from analysis.common.runstart import RunKind, StartedRun, run_start
from analysis.sae.io import SaeNotFoundError, load_sae, sae_source, trained_on
from shards.columns import CONTEXT_POSITION, EXAMPLE_ID, POSITION
from shards.config import check_positive, nested, take_credentials
from shards.errors import ConfigError
from shards.records import JsonRecord
from shards.storage import Storage, StorageOptions

log = logging.getLogger("actlake.sae")
ROWS = "rows"  #: the eval's own activation dataset, under --out
SUMMARY = "eval.json"


@dataclass
class SaeEvalConfig:
    """Evaluate a trained SAE inside the model: CE loss recovered, KL, FVU, L0 on held-out contexts (a model without
    an LM head: the cosine of its final hidden states to the clean ones, recovered)."""

    sae: str
    """The SAE: one `actlake sae train` output directory (or a SAELens-layout directory)."""

    data: DatasetInput | None = field(default=None, metavar="URI[@vN]")
    """The activation dataset the SAE was trained on (default: the one its cfg.json names, at the version it was
    trained on; refused if its URI now holds another dataset); its model, corpus, context size and packing are
    reused, and heldout starts after the examples that version holds. URI@vN reads version N, URI its latest."""

    hook: str = ""
    """The hook to splice at (default: the SAE's training hook)."""

    corpus: str = ""
    """Corpus to evaluate on (default: the dataset's); heldout there starts at its first example. Whether its
    examples overlap the training data is decided by their texts, not by its name (eval.json:
    overlaps_training, training_overlap)."""

    eval_split: str = "heldout"
    """Which examples, by example id: heldout (the corpus' examples after those the dataset holds; for
    builtin:concepts?n=N, examples N.. of a longer draw), all (from 0: training examples too), or START:STOP.
    The dataset's corpus must still be the one it recorded (its content fingerprint), or the run is refused."""

    min_position: int | None = None
    """Splice and ablate at positions >= P only (1: leave the first token, the attention sink, alone); default:
    the SAE's own `sae train --min-position`. The loss is still averaged over every token."""

    examples: int = 128
    """Examples to evaluate (contexts, without packing)."""

    batch_size: int = 8
    """Contexts per forward pass (each runs three times)."""

    out: str = "runs/sae-eval"
    """Output URI: eval.json, eval.parquet (per-position curves), eval_by_position.png, rows/ (per-token)."""

    workers: int = 1
    """Ray actors."""

    threads_per_worker: int = 0
    """Torch threads per actor on CPU (0: the cores divided among the workers)."""

    num_gpus: float = 0
    """GPUs per actor."""

    address: str | None = None
    """Ray address to join (default: a local Ray)."""

    max_retries: int = 3
    """Times a unit is retried after its actor died."""

    force: bool = field(default=False, action="store_true")
    """Splice at a hook the SAE was not trained on (warned) instead of refusing; evaluate although the SAE's
    training corpus changed or cannot be read (overlaps_training is then recorded as null: unknown)."""

    overwrite: bool = field(default=False, action="store_true")
    """Replace an earlier eval at --out instead of resuming it."""

    storage: StorageOptions = field(default_factory=StorageOptions)
    """Storage options for the SAE, the dataset and --out."""

    def __post_init__(self) -> None:
        self.storage = nested(self.storage, StorageOptions)
        take_credentials(self, "sae", "out", "corpus")
        take_inputs(self)
        check_positive(self, "examples", "batch_size", "workers")
        parse_split(self.eval_split)
        if self.min_position is not None and self.min_position < 0:
            raise ConfigError(f"--min-position cannot be negative, got {self.min_position}")


def parse_split(text: str) -> tuple[int, int] | str:
    """``--eval-split``: ``heldout``, ``all`` or ``START:STOP`` example ids."""
    if text in ("heldout", "all"):
        return text
    a, sep, b = text.partition(":")
    try:
        start, stop = int(a), int(b)
    except ValueError:
        start = stop = -1
    if not sep or start < 0 or stop <= start:
        raise ConfigError(f"--eval-split {text!r}: use heldout, all, or START:STOP example ids (e.g. 4000:4128)")
    return start, stop


@dataclass(kw_only=True)
class SaeEvalSummary(RunSummary, JsonRecord):
    """``eval.json``: the settings and every number; ``dataset`` is the SAE's dataset as read (its model, corpus
    and how many examples it holds decide what is evaluated)."""

    sae: str
    hook: str
    model: str
    corpus: str
    eval_split: str
    example_ids: list[int]  #: [start, stop)
    #: whether any evaluation example's text is one the SAE's dataset holds (by content); None: not known (--force)
    overlaps_training: bool | None
    min_position: int  #: spliced and ablated at positions >= this
    measure: str  #: "loss" (causal LMs) or "cosine" (final hidden state; no LM head)
    metrics: dict  #: LossEval or CosineEval, and SaeEval (fvu, l0, dead_frac, dense_frac, mse) on these tokens
    rows: str  #: the per-token dataset
    out: str
    #: how many evaluation examples' texts the SAE's dataset holds (its examples' texts, compared exactly)
    training_overlap: int | None = None


#: the extraction under --out resumes by itself (its units are committed), so a rerun is a new start of the
#: same run; the per-token rows are the run's own dataset
KIND = RunKind("sae eval", frozenset({"out", "overwrite", "workers", "threads_per_worker", "num_gpus", "address",
                                      "max_retries", "storage"}), lock="sae eval output", summary=SUMMARY,
               resume_marker=None, own_datasets=(ROWS,))


def load_one_sae(cfg: SaeEvalConfig):
    """The SAE at ``--sae``; an ``sae train`` run of several SAEs is refused naming each."""
    try:
        return load_sae(cfg.sae, cfg.storage)
    except SaeNotFoundError:
        st = Storage(cfg.sae, cfg.storage)
        if not st.exists("training_summary.json"):
            raise
        names = sorted(json.loads(st.get_bytes("training_summary.json")).get("saes") or {})
        raise ConfigError(f"{st.display()} is an `sae train` run of {len(names)} SAEs; evaluate one at a time: "
                          + ", ".join(f"--sae {st.display(n)}" for n in names[:6])) from None


def _check(cfg: SaeEvalConfig, sae, inputs: dict) -> None:
    """The SAE's dataset must name its hook and be an extraction (its model and corpus are rerun)."""
    ds = inputs["data"]
    if not (cfg.hook or trained_on(sae).hook):
        raise ConfigError(f"{sae_source(cfg.sae, cfg.storage)} does not name its hook; pass --hook")
    if ds.manifest.config is None or "model" not in ds.manifest.config:
        raise ConfigError(f"dataset {ds.storage.display()} was not made by `actlake extract` (no extraction config "
                          "in its manifest); sae eval reruns its model over its corpus")


@contextmanager
def eval_start(cfg: SaeEvalConfig, sae) -> Iterator[tuple[StartedRun, str]]:
    """The run's start (``runstart``): the SAE's dataset pinned (by default at the version it was trained on,
    refused if its URI now holds another dataset) and checked, the output's lock, what --out holds; with the hook
    spliced at."""
    record = trained_on(sae)
    if cfg.data is None and record.data is None:
        raise ConfigError(f"{sae_source(cfg.sae, cfg.storage)} does not name its dataset; pass --data (the "
                          "activation dataset it was trained on)")
    defaults = {k: v for k, v in record.defaults(sae_source(cfg.sae, cfg.storage)).items() if k == "data"}
    with run_start(cfg, KIND, defaults=defaults, check=lambda inputs: _check(cfg, sae, inputs)) as run:
        hook = cfg.hook or record.hook
        run.hooks = [hook]
        yield run, hook


def trained_examples(ds) -> int:
    """How many corpus examples (ids 0..n-1) the SAE's dataset (at the version read) holds."""
    import pyarrow.compute as pc

    corpus = (ds.manifest.provenance.details or {}).get("corpus") or {}
    if corpus.get("examples"):
        return int(corpus["examples"])
    top = pc.max(ds.metadata_table([EXAMPLE_ID]).column(EXAMPLE_ID)).as_py()
    return 0 if top is None else int(top) + 1


def rows_uri(cfg: SaeEvalConfig) -> str:
    """Where the extraction writes the per-token rows: ``OUT/rows``."""
    return Storage(cfg.out, cfg.storage).child(ROWS).uri


def _columns(rows, names: list[str]) -> dict[str, np.ndarray]:
    """Float columns of the per-token dataset, nulls as NaN."""
    table = rows.metadata_table(names)
    return {n: table.column(n).to_numpy(zero_copy_only=False).astype(np.float64) for n in names}


def _metrics(rows) -> tuple[str, dict, dict[str, np.ndarray]]:
    """(measure, the loss or cosine metrics, the per-token columns to curve by position)."""
    from analysis.sae.loss_eval import cosine_eval, loss_eval

    if "spliced_cos" in rows.columns:
        c = _columns(rows, ["spliced_cos", "ablated_cos"])
        return "cosine", cosine_eval(c["spliced_cos"], c["ablated_cos"]).to_json(), {
            "cos_spliced": c["spliced_cos"], "cos_ablated": c["ablated_cos"]}
    c = _columns(rows, ["loss", "spliced_loss", "ablated_loss", "spliced_kl", "ablated_kl"])
    ev = loss_eval(c["loss"], c["spliced_loss"], c["ablated_loss"], c["spliced_kl"], c["ablated_kl"])
    return "loss", ev.to_json(), {"ce_clean": c["loss"], "ce_spliced": c["spliced_loss"],
                                  "ce_ablated": c["ablated_loss"], "kl": c["spliced_kl"]}


def _positions_from(rows, hook: str, min_position: int):
    """Batches of ``hook``'s stored rows at positions >= ``min_position`` (all of them, in row order)."""
    import torch

    from analysis.common.stream import stream_rows

    for batch in stream_rows(rows, hook, columns=[POSITION] if min_position else None):
        x = torch.as_tensor(batch["x"])
        if min_position:
            x = x[torch.as_tensor(batch[POSITION]) >= min_position]
        if len(x):
            yield x


def _flat(record: dict) -> dict:
    """Numbers only, one level: ``dead_below`` {"1e-05": f} becomes ``dead_below_1e-05`` (the split is the
    eval's own, recorded beside them)."""
    out = {}
    for key, value in record.items():
        if isinstance(value, dict):
            out.update({f"{key}_{k}": v for k, v in value.items() if not isinstance(v, (dict, list))})
        else:
            out[key] = value
    return {k: v for k, v in out.items() if k != "split"}


@dataclass(frozen=True)
class Evaluated:
    """What the model-running part settled: the corpus evaluated, the example ids [a, b), the overlap with the
    SAE's training texts (None: unknown) and the positions spliced at."""

    corpus: str
    example_ids: tuple[int, int]
    overlap: int | None
    min_position: int


def summarise(cfg: SaeEvalConfig, sae, run: StartedRun, hook: str, got: Evaluated) -> SaeEvalSummary:
    """The numbers from the per-token dataset (whole, however many runs wrote it): eval.json (written last: the
    run is done), eval.parquet, the plot."""
    from analysis.sae.evals.core import core_metrics
    from analysis.sae.loss_eval import position_curves, position_figure
    from shards.reader import open_dataset

    rows = open_dataset(rows_uri(cfg), cfg.storage)
    measure, metrics, curves_of = _metrics(rows)
    recon, _freq = core_metrics(sae, _positions_from(rows, hook, got.min_position))
    pos_col = CONTEXT_POSITION if CONTEXT_POSITION in rows.columns else POSITION
    position = rows.metadata_table([pos_col]).column(pos_col).to_numpy()
    curves = position_curves(position, curves_of)
    out = Results(cfg.out, cfg.storage)
    out.table("eval.parquet", curves)
    headline = (f"CE loss recovered {metrics['ce_loss_recovered']:.3f}, KL {metrics['kl']:.4f}"
                if measure == "loss" else f"cosine recovered {metrics['cos_recovered']:.3f}")
    out.figure("eval_by_position.png", position_figure(curves, f"{hook}: {headline}, FVU {recon.fvu:.3f}, "
                                                               f"L0 {recon.l0:.1f}"))
    summary = SaeEvalSummary(
        **run.recorded(), sae=cfg.sae, hook=hook, model=run.ds.manifest.config["model"], corpus=got.corpus,
        eval_split=cfg.eval_split, example_ids=list(got.example_ids),
        overlaps_training=None if got.overlap is None else got.overlap > 0, training_overlap=got.overlap,
        min_position=got.min_position, measure=measure, metrics={**metrics, **_flat(recon.to_json())},
        rows=rows.storage.display(), out=out.display())
    run.rundir.finish(summary.to_json())
    log.info("sae eval %s: %s, FVU %.4f, L0 %.1f", hook, headline, recon.fvu, recon.l0)
    return summary
