"""Text: a corpus through a language model, a row per token (or per example with a pool)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from ingest.capture import capture
from ingest.columns import CONTEXT_COLUMNS
from ingest.config import TEXT_POOLS, ExtractConfig
from ingest.corpus import CorpusError, check_unchanged, corpus_fingerprint, corpus_provenance, load_corpus
from ingest.hooks import resolve_hooks
from ingest.modalities.base import Modality
from ingest.models import LoadedModel, max_positions
from ingest.plan import ExtractionPlan, InputSelection, UnitRows, WorkUnit, base_identity, base_provenance, stored_hooks
from ingest.text import TextBatch, TextExtractor, metadata_columns
from shards.errors import ConfigError


@dataclass(frozen=True, kw_only=True)
class TextInputs:
    """The corpus a text job reads, and how it becomes contexts."""

    source: str | tuple[str, ...]  #: the corpus, or the files of it a scheduled tick reads
    text_field: str
    meta_fields: tuple[str, ...]  #: corpus fields carried into every row
    fingerprint: str  #: the corpus' content hash: actors check they read what the driver planned
    context_size: int
    pack: bool
    pool: str
    exclude_special: bool
    rows: tuple[int, int] | None = None  #: a growing table: the rows [start, stop) this job reads
    #: rows the corpus held when planned: a worker's changed corpus is reported by what changed (not identity)
    corpus_rows: int = 0


def _open_corpus(inputs: TextInputs, storage, fields=None, check_text: bool = True):
    corpus = load_corpus(list(inputs.source) if isinstance(inputs.source, tuple) else inputs.source,
                         inputs.text_field, list(fields if fields is not None else inputs.meta_fields),
                         storage_options=storage, check_text=check_text)
    return corpus.select(range(*inputs.rows)) if inputs.rows else corpus


@dataclass
class PreparedText:
    unit: WorkUnit
    batches: list[TextBatch]
    meta: dict[str, list]


class TextModality(Modality):
    name = "text"
    counts = "tokens"

    @classmethod
    def detects(cls, cfg: ExtractConfig, loaded: LoadedModel) -> bool:
        return True  # what is not images is text

    @classmethod
    def plan(cls, cfg: ExtractConfig, loaded: LoadedModel, selection: InputSelection | None = None) -> ExtractionPlan:
        pool = "none" if cfg.pool == "auto" else cfg.pool
        if pool not in TEXT_POOLS:
            raise ConfigError(f"--pool {cfg.pool!r}: use one of {', '.join(TEXT_POOLS)} for text")
        if loaded.tokenizer is None:
            raise ConfigError(f"model {cfg.model!r} has no tokenizer next to it; text extraction needs one")
        limit = max_positions(loaded.model)
        if limit is not None and cfg.context_size > limit:
            raise ConfigError(f"--context-size {cfg.context_size} exceeds the model's maximum of {limit} positions")
        hooks = resolve_hooks(loaded.model, cfg.hooks)
        sel = selection or InputSelection()
        source = tuple(sel.files) if sel.files else cfg.data
        probe = TextInputs(source=source, text_field=cfg.text_field, meta_fields=tuple(cfg.fields), fingerprint="",
                           context_size=0, pack=False, pool=pool, exclude_special=False, rows=sel.rows)
        corpus = _open_corpus(probe, cfg.storage, cfg.fields)
        if len(corpus) == 0:
            raise CorpusError(f"corpus {cfg.data!r} has no rows to extract here")
        n = min(len(corpus), cfg.max_examples) if cfg.max_examples else len(corpus)
        meta = metadata_columns(corpus.features, cfg.text_field, cfg.fields)
        inputs = TextInputs(source=source, text_field=cfg.text_field, meta_fields=tuple(meta),
                            fingerprint=corpus_fingerprint(corpus), context_size=cfg.context_size, pack=cfg.pack,
                            pool=pool, exclude_special=cfg.exclude_special, rows=sel.rows, corpus_rows=len(corpus))
        with torch.inference_mode():  # one short input tells every hook's per-token shape
            acts = capture(loaded.model, hooks, cls.probe_inputs(None, loaded))
        settings = {k: v for k, v in dataclasses.asdict(inputs).items() if k not in ("source", "rows", "corpus_rows")}
        return ExtractionPlan(
            config=dataclasses.replace(cfg, modality="text", pool=pool), modality="text", model=loaded.info(),
            hooks=hooks, hook_specs=stored_hooks(hooks, {h: list(a.shape[2:]) for h, a in acts.items()}, cfg.dtype),
            columns={**meta, **(CONTEXT_COLUMNS if cfg.pack else {})}, num_examples=n,
            provenance=base_provenance(
                loaded, cfg, n,
                corpus={"source": cfg.data, "text_field": cfg.text_field, "fields": list(meta), "examples": n,
                        "fingerprint": inputs.fingerprint, **corpus_provenance(cfg.data)},
                tokenizer={"name": type(loaded.tokenizer).__name__, "vocab_size": loaded.tokenizer.vocab_size,
                           "padding_stored": False},
                packing={"pack": cfg.pack, "context_size": cfg.context_size, "pool": pool,
                         "exclude_special": cfg.exclude_special}),
            identity=base_identity(cfg, loaded, hooks, "text", n, **settings), inputs=inputs)

    @classmethod
    def probe_inputs(cls, plan: ExtractionPlan | None, loaded: LoadedModel) -> dict:
        return dict(loaded.tokenizer(["shape probe"], return_tensors="pt"))

    def __init__(self, plan: ExtractionPlan, loaded: LoadedModel) -> None:
        inputs: TextInputs = plan.inputs
        self.inputs = inputs
        self.corpus = _open_corpus(inputs, plan.config.storage, check_text=False)
        check_unchanged(self.corpus, inputs.source, inputs.fingerprint, inputs.corpus_rows)
        self.extractor = TextExtractor(model=loaded.model, tokenizer=loaded.tokenizer, hooks=plan.hooks,
                                       context_size=inputs.context_size, pack=inputs.pack, pool=inputs.pool,
                                       exclude_special=inputs.exclude_special, dtype=plan.config.dtype,
                                       batch_size=plan.config.batch_size, in_loop=plan.in_loop)

    def prepare(self, unit: WorkUnit) -> PreparedText:
        rows = self.corpus[unit.start:unit.stop]
        batches = self.extractor.prepare(rows[self.inputs.text_field], np.arange(unit.start, unit.stop))
        return PreparedText(unit, batches, {name: rows[name] for name in self.inputs.meta_fields})

    def forward(self, prepared: PreparedText) -> UnitRows:
        ids = np.arange(prepared.unit.start, prepared.unit.stop)
        cols, tokens = self.extractor.forward(prepared.batches, ids, prepared.meta)
        return UnitRows(cols, tokens)
