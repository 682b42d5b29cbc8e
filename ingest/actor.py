"""The Ray extraction actor: loads the model once, extracts units, writes them straight to the destination."""

from __future__ import annotations

import os
import threading
import time

import numpy as np


class ExtractionActor:
    """One model replica. ``process`` runs a unit's forward passes under a lock and then writes the
    unit outside it, so with ``max_concurrency=2`` the next unit's forward overlaps this unit's write."""

    def __init__(self, cfg: dict, unit_writer, threads: int, input_size: list | None = None) -> None:
        import torch

        from ingest.config import ExtractConfig
        from ingest.models import load_model

        if threads > 0:
            torch.set_num_threads(threads)
        self.cfg = ExtractConfig(**cfg)
        self.loaded = load_model(self.cfg.model, self.cfg.model_dtype,
                                 "cuda" if self.cfg.num_gpus and torch.cuda.is_available() else "cpu")
        self.writer = unit_writer
        self.forward_lock = threading.Lock()
        if self.cfg.modality == "image":
            from ingest.image_job import build_image_job

            self.image_job = build_image_job(self.cfg, self.loaded, tuple(input_size) if input_size else None)
            return
        self._init_text(unit_writer)

    def _init_text(self, unit_writer) -> None:
        from ingest.corpus import load_corpus
        from ingest.hooks import resolve_hooks
        from ingest.text import TextExtractor

        hooks = resolve_hooks(self.loaded.model, self.cfg.hooks)
        self.corpus = load_corpus(self.cfg.data, self.cfg.text_field, self.cfg.fields,
                                  storage_options=self.cfg.storage_options())
        self.meta_fields = [c for c in unit_writer.schema.columns if c not in ("context_id", "context_position")]
        self.extractor = TextExtractor(self.loaded.model, self.loaded.tokenizer, hooks, self.cfg.context_size,
                                       self.cfg.pack, self.cfg.pool, self.cfg.exclude_special, self.cfg.dtype,
                                       self.cfg.batch_size)

    def pid(self) -> int:
        return os.getpid()

    def process(self, unit_id: int, start: int, stop: int) -> dict:
        if self.cfg.modality == "image":
            return self._process_images(unit_id, start, stop)
        rows = self.corpus[start:stop]
        texts = rows[self.cfg.text_field]
        meta = {name: rows[name] for name in self.meta_fields}
        t0 = time.perf_counter()
        with self.forward_lock:
            cols, n_tokens = self.extractor.run(texts, np.arange(start, stop), meta)
        t1 = time.perf_counter()
        record = self.writer.write(unit_id, cols)
        return {"record": record, "tokens": n_tokens, "forward_s": t1 - t0, "write_s": time.perf_counter() - t1}

    def _process_images(self, unit_id: int, start: int, stop: int) -> dict:
        job = self.image_job
        t0 = time.perf_counter()
        # decoding and preprocessing stay outside the lock: they overlap the other unit's forward pass
        batches, kept, skipped = job.extractor.prepare(job.source, start, stop)
        t1 = time.perf_counter()
        with self.forward_lock:
            cols = job.extractor.run(batches, kept, job.source, job.meta_fields)
        t2 = time.perf_counter()
        record = self.writer.write(unit_id, cols, skipped=skipped)
        return {"record": record, "tokens": len(kept), "decode_s": t1 - t0, "forward_s": t2 - t1,
                "write_s": time.perf_counter() - t2}
