"""Asking a model many prompts exactly once: answers cached by the request's hash under ``answers/`` of the run's
output (created only if absent), so a killed run, or a rerun with other scorers, asks only what has no answer yet.
The prompts fan out over Ray tasks (``--workers``), each with ``--concurrency`` requests in flight."""

from __future__ import annotations

import json
import logging
import queue
import threading
from dataclasses import dataclass, field

from analysis.interp.clients.base import (
    KINDS,
    Answer,
    ClientError,
    ClientSpec,
    FatalClientError,
    Secret,
    make_client,
)
from analysis.interp.prompts import Request
from shards.progress import Progress
from shards.storage import Storage, StorageOptions

log = logging.getLogger("actlake.sae")
ANSWERS = "answers"


class AnswerCache:
    """``answers/<request hash>.json``: the request (model, sampling, prompt) and its answer."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    def keys(self) -> set[str]:
        return {name.rsplit("/", 1)[-1].removesuffix(".json") for name in self.storage.list(ANSWERS)
                if name.endswith(".json")}

    def get(self, key: str) -> Answer | None:
        """The answer, or None when its file is damaged (not written by actlake: answers are written whole)."""
        try:
            return Answer.from_json(json.loads(self.storage.get_bytes(f"{ANSWERS}/{key}.json"))["answer"])
        except (ValueError, KeyError, TypeError):
            log.warning("answers/%s.json is damaged: read as no answer (delete it to ask again)", key)
            return None

    def put(self, req: Request, answer: Answer) -> bool:
        """Store the answer unless one is there already (two workers never both write one); True if stored."""
        blob = json.dumps({"request": {"client": req.client, "model": req.model, "max_tokens": req.max_tokens,
                                       "temperature": req.temperature, "logprobs": req.logprobs,
                                       "messages": req.messages},
                           "answer": answer.to_json()}, ensure_ascii=False).encode()
        return self.storage.create_exclusive(f"{ANSWERS}/{req.key()}.json", blob)


@dataclass
class Usage:
    """What asking cost: requests answered now, answers found cached, failures, tokens billed now."""

    calls: int = 0
    cached: int = 0
    failed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    errors: list[str] = field(default_factory=list)  #: the first few failures, one line each

    def add(self, other: Usage) -> None:
        for name in ("calls", "cached", "failed", "prompt_tokens", "completion_tokens"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.errors = (self.errors + other.errors)[:5]

    def cost(self, price_in: float, price_out: float) -> float:
        return round((self.prompt_tokens * price_in + self.completion_tokens * price_out) / 1e6, 6)


class _Askers:
    """``concurrency`` daemon threads taking requests from one queue: each answer stored as it arrives
    (``accept(answer)`` raising ``ValueError``: not stored, counted as failed). A fatal client error (key refused,
    nothing listening) stops the rest and is raised; so is Ctrl-C, at once: daemon threads neither hold the
    process nor go on retrying a request in flight."""

    def __init__(self, client, cache: AnswerCache, accept=None, on_done=None) -> None:
        self.client, self.cache, self.accept, self.on_done = client, cache, accept, on_done
        self.usage, self.lock = Usage(), threading.Lock()
        self.todo, self.stop, self.fatal = queue.SimpleQueue(), threading.Event(), []

    def _fail(self, text: str) -> None:
        with self.lock:
            self.usage.failed += 1
            self.usage.errors = (self.usage.errors + [text])[:5]

    def _one(self, req: Request) -> None:
        try:
            ans = self.client.complete(req.messages, max_tokens=req.max_tokens, temperature=req.temperature,
                                       logprobs=req.logprobs)
            if self.accept is not None:
                self.accept(ans)
        except ClientError as e:
            return self._fail(str(e))
        except ValueError as e:  # an answer that cannot be used (an empty explanation): not kept, asked again
            return self._fail(f"unusable answer: {e}")
        stored = self.cache.put(req, ans)
        with self.lock:
            self.usage.calls += 1
            self.usage.prompt_tokens += ans.prompt_tokens
            self.usage.completion_tokens += ans.completion_tokens
            self.usage.cached += 0 if stored else 1
        if self.on_done is not None:
            self.on_done()

    def _loop(self) -> None:
        while not self.stop.is_set():
            try:
                req = self.todo.get_nowait()
            except queue.Empty:
                return
            try:
                self._one(req)
            except BaseException as e:  # noqa: BLE001 - handed to the caller's thread
                self.fatal.append(e)
                self.stop.set()

    def run(self, reqs: list[Request], concurrency: int) -> Usage:
        for r in reqs:
            self.todo.put(r)
        threads = [threading.Thread(target=self._loop, name=f"ask-{i}", daemon=True)
                   for i in range(min(concurrency, len(reqs)))]
        for t in threads:
            t.start()
        try:
            for t in threads:
                while t.is_alive():
                    t.join(0.2)  # short joins: Ctrl-C reaches this thread at once
        finally:
            self.stop.set()
        if self.fatal:
            raise self.fatal[0]
        return self.usage


def _ask_some(spec: ClientSpec, out: str, storage: StorageOptions, reqs: list[Request], concurrency: int,
              on_done=None, key: Secret | None = None, client=None, accept=None) -> Usage:
    """Ask each request (``_Askers``) through ``client`` or one made from ``spec`` (and the driver's ``key``)."""
    return _Askers(client or make_client(spec, key), AnswerCache(Storage(out, storage)), accept,
                   on_done).run(reqs, concurrency)


def ask_all(reqs: list[Request], spec: ClientSpec, out: str, storage: StorageOptions, *, concurrency: int,
            workers: int = 1, address: str | None = None, what: str = "prompt", client=None,
            accept=None) -> Usage:
    """Every request answered once (cached answers are not asked again); the usage of this call. ``client``: one
    already made (a local model loaded once), for asking in this process."""
    cache = AnswerCache(Storage(out, storage))
    have = cache.keys()
    unique = {r.key(): r for r in reqs}
    todo = [r for k, r in unique.items() if k not in have]
    usage = Usage(cached=len(unique) - len(todo))
    if usage.cached:
        log.info("%d of %d %ss already answered (answers/): not asked again", usage.cached, len(unique), what)
    if not todo:
        return usage
    with Progress(len(todo), what, f"{what}s", log) as progress:
        if workers <= 1 and not address:
            usage.add(_ask_some(spec, out, storage, todo, concurrency, on_done=progress.update, client=client,
                                accept=accept))
            return usage
        from shards.runtime import connect_ray

        ray = connect_ray(address)
        key = Secret.from_env(spec)  # a cluster's workers do not share this shell's environment
        task = ray.remote(num_cpus=KINDS[spec.kind].cpus)(_ask_some)
        size = max(1, -(-len(todo) // (workers * 4)))  # a few chunks per worker: progress, and even loads
        chunks = [todo[i:i + size] for i in range(0, len(todo), size)]
        pending, running = list(chunks), {}
        try:
            while pending or running:
                while pending and len(running) < workers:
                    chunk = pending.pop(0)
                    running[task.remote(spec, out, storage, chunk, concurrency, key=key, accept=accept)] = chunk
                done, _ = ray.wait(list(running), num_returns=1)
                chunk = running.pop(done[0])
                usage.add(_unwrap(ray, done[0]))
                progress.update(len(chunk))
        finally:  # a fatal error or Ctrl-C: the other tasks stop, and their errors are collected (not printed)
            for ref in running:
                ray.cancel(ref)
            for ref in running:
                try:
                    ray.get(ref, timeout=10)
                except Exception:  # noqa: BLE001, S110 - cancelled or failed alike: the first error is raised
                    pass
    return usage


def _unwrap(ray, ref) -> Usage:
    """A task's usage; a fatal client error raised in the task comes back as itself, not Ray's wrapper."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as e:
        cause = e.as_instanceof_cause()
        if isinstance(cause, FatalClientError):
            last = str(cause).strip().splitlines()[-1]
            raise FatalClientError(last.split("FatalClientError: ", 1)[-1]) from None
        raise
