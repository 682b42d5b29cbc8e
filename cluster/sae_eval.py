"""``actlake sae eval``: what an SAE does to the model. One extraction job on Ray actors (as ``actlake extract``)
runs each batch of held-out contexts three times in the same actor: clean (storing the hook's activations and
the next-token loss), with the SAE spliced in, and with the hook zero-ablated; the numbers come from the stored
per-token columns, so a killed run resumes exactly once and gives the same numbers.

The analysis part (config, the run's start with the SAE's dataset pinned, the numbers) is
``analysis/sae/model_eval.py``; this module composes it with ``ingest`` (the corpus and the extraction), which
``analysis`` does not import."""

from __future__ import annotations

import dataclasses
import functools
import logging

from analysis.sae.model_eval import (
    Evaluated,
    SaeEvalConfig,
    SaeEvalSummary,
    eval_start,
    load_one_sae,
    parse_split,
    rows_uri,
    summarise,
    trained_examples,
)
from shards.errors import ConfigError

log = logging.getLogger("actlake.sae")
__all__ = ["SaeEvalConfig", "SaeEvalSummary", "run"]


def _eval_rows(cfg: SaeEvalConfig, corpus: str, trained: int, load) -> tuple[str, tuple[int, int], object]:
    """(corpus, example ids [a, b), the evaluation examples: a ``datasets.Dataset``); ``load`` reads a corpus."""
    from ingest.corpus import BUILTIN_PREFIX, builtin_spec, parse_builtin

    split = parse_split(cfg.eval_split)
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
    from ingest.corpus import CorpusError, fingerprint_like

    source = ds.manifest.config["data"]
    recorded = (((ds.manifest.provenance.details or {}).get("corpus") or {}).get("fingerprint")
                or (ds.manifest.job_identity or {}).get("fingerprint"))
    try:
        corpus = load(source)
        now = fingerprint_like(recorded, corpus)
        problem = "" if now == recorded else (
            f"the dataset recorded content fingerprint {recorded} and the corpus has {now} now ({len(corpus)} "
            "examples)" if recorded else "the dataset recorded no fingerprint of it")
    except (CorpusError, OSError) as exc:
        problem = f"it cannot be read now ({exc})"
    if not problem:
        return _text_column(corpus.select(range(min(trained_examples(ds), len(corpus)))), text_field)
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


def _extract_config(cfg: SaeEvalConfig, job: dict, corpus: str, hook: str):
    from ingest.config import ExtractConfig

    keep = ("model", "model_dtype", "text_field", "context_size", "pack", "exclude_special")
    return ExtractConfig(**{k: job[k] for k in keep if k in job}, data=corpus, hooks=[hook], pool="none",
                         dtype="float32", out=rows_uri(cfg), batch_size=cfg.batch_size,
                         unit_size=max(cfg.batch_size, 16),
                         workers=cfg.workers, threads_per_worker=cfg.threads_per_worker, num_gpus=cfg.num_gpus,
                         address=cfg.address, max_retries=cfg.max_retries, force=cfg.force, overwrite=cfg.overwrite,
                         storage=cfg.storage, fields=[])


def run(cfg: SaeEvalConfig) -> SaeEvalSummary:
    """Splice, ablate and run clean on held-out contexts; write eval.json, eval.parquet and the plot. A rerun of a
    finished eval returns it; a killed one resumes its extraction.

    Example::

        run(SaeEvalConfig(sae="runs/topk", examples=64, out="runs/topk-eval"))
    """
    from analysis.interventions import build
    from analysis.sae.io import rows_min_position
    from ingest.corpus import load_corpus
    from ingest.driver import run_extraction
    from ingest.plan import InputSelection

    sae = load_one_sae(cfg)
    with eval_start(cfg, sae) as (started, hook):
        if started.state == "done":
            return SaeEvalSummary.from_json(started.rundir.summary())
        ds = started.ds  # the SAE's dataset at the version pinned: its corpus, model, and examples held
        job = ds.manifest.config
        text_field = job.get("text_field", "text")
        # another corpus' examples count from 0 (whether they are training texts is decided by content below)
        trained = trained_examples(ds) if cfg.corpus in ("", job["data"]) else 0
        load = functools.lru_cache(maxsize=2)(
            lambda c: load_corpus(c, text_field, [], storage_options=cfg.storage))  # the dataset's corpus read once
        corpus, (a, b), evaluated = _eval_rows(cfg, cfg.corpus or job["data"], trained, load)
        overlap = _training_overlap(cfg, ds, load, evaluated, text_field)
        if overlap:
            log.warning("evaluating on examples %d..%d of %s: %d of them are texts the SAE's dataset holds", a,
                        b - 1, corpus, overlap)
        # the rows filter the SAE was trained with unless --min-position says otherwise (one rule for every SAE
        # reader); given explicitly, so that --min-position 0 splices position 0 too
        cfg = dataclasses.replace(cfg, min_position=rows_min_position(sae, cfg.min_position))
        at = f",from_position={cfg.min_position}"
        comparisons = [("spliced", [f"{hook}:splice:sae={cfg.sae}{at}"]), ("ablated", [f"{hook}:zero:{at[1:]}"])]
        started.begin(cfg)
        run_extraction(_extract_config(cfg, job, corpus, hook), resolver=build, comparisons=comparisons,
                       selection=InputSelection(rows=(a, b)))
        return summarise(cfg, sae, started, hook, Evaluated(corpus, (a, b), overlap, cfg.min_position))
