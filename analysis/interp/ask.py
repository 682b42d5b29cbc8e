"""Asking a model many prompts exactly once: answers cached by the request's hash under ``answers/`` of the run's
output (created only if absent), so a killed run, or a rerun with other scorers, asks only what has no answer yet.
The prompts fan out over Ray tasks (``--workers``), each with ``--concurrency`` requests in flight."""

from __future__ import annotations

import json
import logging
import threading
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
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

    def get(self, key: str) -> Answer:
        return Answer.from_json(json.loads(self.storage.get_bytes(f"{ANSWERS}/{key}.json"))["answer"])

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


def _ask_some(spec: ClientSpec, out: str, storage: StorageOptions, reqs: list[Request], concurrency: int,
              on_done=None, key: Secret | None = None, client=None) -> Usage:
    """Ask each request not cached yet, ``concurrency`` at a time; store each answer as it arrives. A fatal
    client error (key refused, nothing listening) stops the rest and is raised."""
    cache, usage, lock = AnswerCache(Storage(out, storage)), Usage(), threading.Lock()
    client = client or make_client(spec, key)
    stop = threading.Event()

    def one(req: Request) -> None:
        if stop.is_set():
            return
        try:
            ans = client.complete(req.messages, max_tokens=req.max_tokens, temperature=req.temperature,
                                  logprobs=req.logprobs)
        except ClientError as e:
            with lock:
                usage.failed += 1
                usage.errors = (usage.errors + [str(e)])[:5]
            return
        except FatalClientError:
            stop.set()
            raise
        stored = cache.put(req, ans)
        with lock:
            usage.calls += 1
            usage.prompt_tokens += ans.prompt_tokens
            usage.completion_tokens += ans.completion_tokens
            usage.cached += 0 if stored else 1
        if on_done is not None:
            on_done()

    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="ask")
    try:
        futures = [pool.submit(one, r) for r in reqs]
        wait(futures, return_when=FIRST_EXCEPTION)
        for f in futures:
            if f.done() and not f.cancelled() and f.exception() is not None:
                raise f.exception()
    finally:  # a fatal error or Ctrl-C: nothing more is sent; requests in flight end and keep their answers
        stop.set()
        pool.shutdown(wait=False, cancel_futures=True)
    return usage


def ask_all(reqs: list[Request], spec: ClientSpec, out: str, storage: StorageOptions, *, concurrency: int,
            workers: int = 1, address: str | None = None, what: str = "prompt", client=None) -> Usage:
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
            usage.add(_ask_some(spec, out, storage, todo, concurrency, on_done=progress.update, client=client))
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
                    running[task.remote(spec, out, storage, chunk, concurrency, key=key)] = chunk
                done, _ = ray.wait(list(running), num_returns=1)
                chunk = running.pop(done[0])
                usage.add(_unwrap(ray, done[0]))
                progress.update(len(chunk))
        finally:
            for ref in running:
                ray.cancel(ref)
    return usage


def _unwrap(ray, ref) -> Usage:
    """A task's usage; a fatal client error raised in the task comes back as itself, not Ray's wrapper."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as e:
        cause = e.as_instanceof_cause()
        if isinstance(cause, FatalClientError):
            raise FatalClientError(str(cause).splitlines()[-1]) from None
        raise
