"""``actlake sae eval``: what an SAE does to the model. One extraction job on Ray actors (as ``actlake extract``)
runs each batch of held-out contexts three times in the same actor: clean (storing the hook's activations and
the next-token loss), with the SAE spliced in, and with the hook zero-ablated; the numbers come from the stored
per-token columns, so a killed run resumes exactly once and gives the same numbers.

It composes ``ingest`` (the extraction) and ``analysis`` (the SAE, the intervention kinds, the metrics), which
is why it lives here and not in ``analysis``."""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
from dataclasses import dataclass

import numpy as np
from simple_parsing import field

from shards.config import check_positive, nested, take_credentials
from shards.errors import ConfigError
from shards.records import JsonRecord
from shards.storage import StorageOptions

log = logging.getLogger("actlake.sae")
ROWS = "rows"  #: the eval's own activation dataset, under --out


@dataclass
class SaeEvalConfig:
    """Evaluate a trained SAE inside the model: CE loss recovered, KL, FVU, L0 on held-out contexts."""

    sae: str
    """The SAE: one `actlake sae train` output directory (or a SAELens-layout directory)."""

    data: str = ""
    """The activation dataset the SAE was trained on (default: the one its cfg.json names); its model, corpus,
    context size and packing are reused."""

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
        take_credentials(self, "sae", "data", "out", "corpus")
        check_positive(self, "examples", "batch_size", "workers")
        _parse_split(self.eval_split)
        if self.min_position is not None and self.min_position < 0:
            raise ConfigError(f"--min-position cannot be negative, got {self.min_position}")


def _parse_split(text: str) -> tuple[int, int] | str:
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
class SaeEvalSummary(JsonRecord):
    """``eval.json``: the settings and every number."""

    sae: str
    hook: str
    model: str
    dataset: str
    dataset_id: str
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


def _eval_rows(cfg: SaeEvalConfig, corpus: str, trained: int, load) -> tuple[str, tuple[int, int], object]:
    """(corpus, example ids [a, b), the evaluation examples: a ``datasets.Dataset``); ``load`` reads a corpus."""
    from ingest.corpus import BUILTIN_PREFIX, builtin_spec, parse_builtin

    split = _parse_split(cfg.eval_split)
    if split == "all":
        a, b = 0, cfg.examples
    elif split == "heldout":
        a, b = trained, trained + cfg.examples
    else:
        a, b = split
    if corpus.startswith(BUILTIN_PREFIX) and 0 < parse_builtin(corpus)["n"] < b:
        # the built-in corpus is one seeded draw: a longer draw starts with the same examples (n=0 is all of it);
        # every other parameter (seed, words, snapshot) is kept, or the draw would be of another corpus
        corpus = builtin_spec(corpus, n=b)
    examples = load(corpus)
    n = len(examples)
    if b > n:
        raise ConfigError(f"--eval-split {cfg.eval_split}: examples {a}..{b - 1} are not all in {corpus!r} ({n} "
                          "examples; the SAE's dataset holds the first "
                          f"{trained}). Pass --corpus with more examples, fewer --examples, or --eval-split all")
    return corpus, (a, b), examples.select(range(a, b))


def _text_column(examples, text_field: str):
    """A corpus' texts as one Arrow array (compared in Arrow: a training corpus may hold millions)."""
    return examples.with_format("arrow")[:][text_field].combine_chunks()


def _training_texts(cfg: SaeEvalConfig, ds, load, text_field: str):
    """The texts of the examples the SAE's dataset holds (ids 0..n-1 of its corpus), read from that corpus after
    checking it is still the one the dataset recorded (its content fingerprint); ConfigError naming the corpus and
    what changed when it is not (None, warned, with --force): an index into another corpus says nothing about
    which examples the SAE saw."""
    from ingest.corpus import CorpusError, corpus_fingerprint

    source = ds.manifest.config["data"]
    recorded = (((ds.manifest.provenance.details or {}).get("corpus") or {}).get("fingerprint")
                or (ds.manifest.job_identity or {}).get("fingerprint"))
    try:
        corpus = load(source)
        now = corpus_fingerprint(corpus)
        problem = "" if now == recorded else (
            f"the dataset recorded content fingerprint {recorded} and the corpus has {now} now ({len(corpus)} "
            "examples)" if recorded else "the dataset recorded no fingerprint of it")
    except (CorpusError, OSError) as exc:
        problem = f"it cannot be read now ({exc})"
    if not problem:
        return _text_column(corpus.select(range(min(_trained_examples(ds), len(corpus)))), text_field)
    msg = (f"the SAE's dataset {ds.storage.display()} was made from corpus {source!r}, which is not that corpus any "
           f"more: {problem}. Which texts the SAE trained on cannot be known, so no evaluation example can be "
           "called held out. Restore the corpus as it was, or pass --force to evaluate anyway (eval.json then "
           "records overlaps_training as null)")
    if not cfg.force:
        raise ConfigError(msg)
    log.warning("%s", msg)
    return None


def _training_overlap(cfg: SaeEvalConfig, ds, load, evaluated, text_field: str) -> int | None:
    """How many evaluation examples have a text that one of the SAE's training examples has (None: unknown)."""
    import pyarrow.compute as pc

    trained = _training_texts(cfg, ds, load, text_field)
    if trained is None:
        return None
    return int(pc.sum(pc.is_in(_text_column(evaluated, text_field), value_set=trained)).as_py() or 0)


def _sae_and_dataset(cfg: SaeEvalConfig):
    from analysis.sae.io import SaeNotFoundError, load_sae, trained_on
    from shards.reader import open_dataset
    from shards.storage import Storage

    try:
        sae = load_sae(cfg.sae, cfg.storage)
    except SaeNotFoundError:
        st = Storage(cfg.sae, cfg.storage)
        if not st.exists("training_summary.json"):
            raise
        names = sorted(json.loads(st.get_bytes("training_summary.json")).get("saes") or {})
        raise ConfigError(f"{st.display()} is an `sae train` run of {len(names)} SAEs; evaluate one at a time: "
                          + ", ".join(f"--sae {st.display(n)}" for n in names[:6])) from None
    dataset, trained_hook = trained_on(sae)
    uri = cfg.data or dataset
    if not uri:
        raise ConfigError(f"the SAE at {cfg.sae} does not name its dataset; pass --data (the activation dataset "
                          "it was trained on)")
    ds = open_dataset(uri, cfg.storage)
    hook = cfg.hook or trained_hook
    if not hook:
        raise ConfigError(f"the SAE at {cfg.sae} does not name its hook; pass --hook")
    if ds.manifest.config is None or "model" not in ds.manifest.config:
        raise ConfigError(f"dataset {ds.storage.display()} was not made by `actlake extract` (no extraction config "
                          "in its manifest); sae eval reruns its model over its corpus")
    return sae, ds, hook


def _extract_config(cfg: SaeEvalConfig, job: dict, corpus: str, hook: str):
    from ingest.config import ExtractConfig

    keep = ("model", "model_dtype", "text_field", "context_size", "pack", "exclude_special")
    return ExtractConfig(**{k: job[k] for k in keep if k in job}, data=corpus, hooks=[hook], pool="none",
                         dtype="float32", out=_rows_uri(cfg), batch_size=cfg.batch_size,
                         unit_size=max(cfg.batch_size, 16),
                         workers=cfg.workers, threads_per_worker=cfg.threads_per_worker, num_gpus=cfg.num_gpus,
                         address=cfg.address, max_retries=cfg.max_retries, force=cfg.force, overwrite=cfg.overwrite,
                         storage=cfg.storage, fields=[])


def _rows_uri(cfg: SaeEvalConfig) -> str:
    from shards.storage import Storage

    return Storage(cfg.out, cfg.storage).child(ROWS).uri


def run(cfg: SaeEvalConfig) -> SaeEvalSummary:
    """Splice, ablate and run clean on held-out contexts; write eval.json, eval.parquet and the plot.

    Example::

        run(SaeEvalConfig(sae="runs/topk", examples=64, out="runs/topk-eval"))
    """
    from analysis.interventions import build
    from analysis.sae.io import rows_min_position
    from ingest.corpus import load_corpus
    from ingest.driver import run_extraction
    from ingest.plan import InputSelection

    sae, ds, hook = _sae_and_dataset(cfg)
    job = ds.manifest.config
    text_field = job.get("text_field", "text")
    # another corpus' examples count from 0 (whether they are training texts is decided by content below)
    trained = _trained_examples(ds) if cfg.corpus in ("", job["data"]) else 0
    load = functools.lru_cache(maxsize=2)(
        lambda c: load_corpus(c, text_field, [], storage_options=cfg.storage))  # the dataset's corpus read once
    corpus, (a, b), evaluated = _eval_rows(cfg, cfg.corpus or job["data"], trained, load)
    overlap = _training_overlap(cfg, ds, load, evaluated, text_field)
    if overlap:
        log.warning("evaluating on examples %d..%d of %s: %d of them are texts the SAE's dataset holds", a, b - 1,
                    corpus, overlap)
    # the rows filter the SAE was trained with unless --min-position says otherwise (one rule for every SAE reader);
    # given explicitly, so that --min-position 0 splices position 0 too
    cfg = dataclasses.replace(cfg, min_position=rows_min_position(sae, cfg.min_position))
    at = f",from_position={cfg.min_position}"
    comparisons = [("spliced", [f"{hook}:splice:sae={cfg.sae}{at}"]), ("ablated", [f"{hook}:zero:{at[1:]}"])]
    run_extraction(_extract_config(cfg, job, corpus, hook), resolver=build, comparisons=comparisons,
                   selection=InputSelection(rows=(a, b)))
    return _summarise(cfg, sae, ds, hook, corpus, (a, b), overlap)


def _trained_examples(ds) -> int:
    """How many corpus examples (ids 0..n-1) the SAE's dataset holds."""
    import pyarrow.compute as pc

    corpus = (ds.manifest.provenance.details or {}).get("corpus") or {}
    if corpus.get("examples"):
        return int(corpus["examples"])
    top = pc.max(ds.metadata_table(["example_id"]).column("example_id")).as_py()
    return 0 if top is None else int(top) + 1


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

    for batch in stream_rows(rows, hook, columns=["position"] if min_position else None):
        x = torch.as_tensor(batch["x"])
        if min_position:
            x = x[torch.as_tensor(batch["position"]) >= min_position]
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


def _summarise(cfg: SaeEvalConfig, sae, ds, hook: str, corpus: str, ids: tuple[int, int],
               overlap: int | None) -> SaeEvalSummary:
    """The numbers from the per-token dataset (whole, however many runs wrote it): eval.json, eval.parquet, plot."""
    from analysis.common.results import Results
    from analysis.sae.evals.core import core_metrics
    from analysis.sae.loss_eval import position_curves, position_figure
    from shards.reader import open_dataset

    rows = open_dataset(_rows_uri(cfg), cfg.storage)
    measure, metrics, curves_of = _metrics(rows)
    recon, _freq = core_metrics(sae, _positions_from(rows, hook, cfg.min_position))
    pos_col = "context_position" if "context_position" in rows.columns else "position"
    position = rows.metadata_table([pos_col]).column(pos_col).to_numpy()
    curves = position_curves(position, curves_of)
    out = Results(cfg.out, cfg.storage)
    out.table("eval.parquet", curves)
    headline = (f"CE loss recovered {metrics['ce_loss_recovered']:.3f}, KL {metrics['kl']:.4f}"
                if measure == "loss" else f"cosine recovered {metrics['cos_recovered']:.3f}")
    out.figure("eval_by_position.png", position_figure(curves, f"{hook}: {headline}, FVU {recon.fvu:.3f}, "
                                                               f"L0 {recon.l0:.1f}"))
    summary = SaeEvalSummary(
        sae=cfg.sae, hook=hook, model=ds.manifest.config["model"], dataset=ds.storage.display(),
        dataset_id=ds.dataset_id, corpus=corpus, eval_split=cfg.eval_split, example_ids=list(ids),
        overlaps_training=None if overlap is None else overlap > 0, training_overlap=overlap,
        min_position=cfg.min_position, measure=measure,
        metrics={**metrics, **_flat(recon.to_json())}, rows=rows.storage.display(), out=out.display())
    out.json("eval.json", summary.to_json())
    log.info("sae eval %s: %s", hook, summary.metrics)
    return summary
