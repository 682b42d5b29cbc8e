"""``actlake sae explain`` and ``actlake sae score``: contexts from the dataset, prompts, answers asked once
(``ask``), explanations and scores written as JSON lines with a summary and a report."""

from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from analysis.common.inputs import RunSummary
from analysis.common.rundir import output_lock, refuse_dataset_place
from analysis.common.runstart import RunKind, run_start
from analysis.interp import report
from analysis.interp.ask import AnswerCache, Usage, ask_all
from analysis.interp.clients.base import ClientError, FatalClientError, make_client
from analysis.interp.config import NEUTRAL, InterpConfigError, SaeExplainConfig, SaeScoreConfig, select_latents
from analysis.interp.contexts import ContextPlan, LatentContexts, collect
from analysis.interp.files import (
    CONTEXTS,
    EXPLANATIONS,
    PREDICTIONS,
    SCORES,
    TABLE,
    TABLE_INFO,
    explanations_digest,
    read_kept_table,
    table_info,
)
from analysis.interp.prompts import (
    MalformedAnswerError,
    Request,
    classify_messages,
    explain_messages,
    parse_explanation,
    parse_predictions,
    parse_probabilities,
)
from analysis.interp.scoring import Sample, Score, batches, samples_for, score
from analysis.sae.dashboard.collect import sae_digest
from shards.errors import ActlakeError
from shards.progress import Progress
from shards.records import JsonRecord
from shards.storage import Storage

log = logging.getLogger("actlake.sae")


class InterpError(ActlakeError, RuntimeError):
    """Explaining or scoring could not finish (some prompts unanswered: a rerun asks only those)."""


def _jsonl(rows) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()


def _read_jsonl(st: Storage, name: str) -> list[dict]:
    return [json.loads(line) for line in st.get_bytes(name).decode().splitlines() if line.strip()]


# ---------------------------------------------------------------------------------------------- sae explain


@dataclass(kw_only=True)
class ExplainSummary(RunSummary, JsonRecord):
    """``summary.json`` of ``sae explain``."""

    out: str
    explainer: str
    model: str
    latents: int  #: selected
    explained: int
    unmarked: int  #: answers without the [EXPLANATION]: line (their last line taken)
    skipped: int  #: selected latents that never fire on the dataset (nothing to show)
    failed: int
    calls: int  #: requests answered in this run
    cached: int  #: answers reused from answers/ (an earlier, killed run)
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None  #: None: no --price-in / --price-out given
    seconds: float
    sae_digest: str = ""  #: the SAE's encoder digest: what `sae dashboard` / `sae evaluate` check explanations by
    contexts_seconds: float = 0.0  #: the passes over the dataset (0 when a killed run's contexts were read back)
    ask_seconds: float = 0.0  #: asking the explainer


#: --overwrite (another --latents, another model) keeps the answers, keyed by their request's hash, and the kept
#: collection pass, checked against the SAE, dataset version, hook, rows and seed before it is used
EXPLAIN_KIND = RunKind("sae explain", NEUTRAL, lock="explain output", kept=("answers/", TABLE, TABLE_INFO))


def writable(out: Storage) -> None:
    """``--out`` written to once (and the probe removed): a file, or a place without write access, is refused
    before any work."""
    try:
        out.put_bytes(".actlake-write-probe", b"")
        out.delete(".actlake-write-probe")
    except OSError as e:
        raise InterpConfigError(f"cannot write to --out {out.display()} ({type(e).__name__}: {e}); choose a "
                                "folder or s3:// prefix you can write to") from None


def _explain_checks(cfg: SaeExplainConfig, sae, record, checked: dict):
    """The refusals before anything is written: the SAE against the pinned dataset, a text dataset (its token
    rows kept in ``checked``), latent ids within the SAE, an output that is no dataset and can be written."""

    def check(inputs: dict) -> None:
        from analysis.sae.dashboard.run import DashboardError, _check
        from shards.columns import EXAMPLE_ID, STIMULUS_ID, TOKEN_ID

        ds = inputs["data"]
        try:
            _check(cfg, sae, record.hook, ds)
        except DashboardError as e:
            raise InterpConfigError(str(e)) from None
        if TOKEN_ID not in ds.columns or STIMULUS_ID in ds.columns:
            raise InterpConfigError(f"{ds.storage.display()} is not a text dataset: sae explain shows token "
                                    "contexts to a language model")
        checked["meta"] = ds.metadata_table([EXAMPLE_ID, TOKEN_ID])
        if checked["meta"].column(TOKEN_ID).null_count == len(checked["meta"]):
            raise InterpConfigError(f"{ds.storage.display()} holds no token rows (token_id is null: rows pooled "
                                    "per example, or imported features); extract with --pool none")
        select_latents(cfg.latents, np.ones(sae.d_sae), cfg.seed)  # ids beyond the SAE's width: refused now
        if Storage(cfg.out, cfg.storage).exists("sae_weights.safetensors"):
            raise InterpConfigError(f"--out {cfg.out} holds an SAE: give the explanations a folder of their own")
        refuse_dataset_place(Storage(cfg.out, cfg.storage))
        writable(Storage(cfg.out, cfg.storage))

    return check


def explain(cfg: SaeExplainConfig) -> ExplainSummary:
    """Contexts of the selected latents, one explainer prompt each, answers asked once, explanations written."""
    from analysis.sae.io import load_sae, rows_min_position, sae_source
    from analysis.sae.io import trained_on as trained

    t0 = time.perf_counter()
    sae = load_sae(cfg.sae, cfg.storage).eval()
    record = trained(sae)
    if cfg.data is None and record.data is None:
        raise InterpConfigError(f"{sae_source(cfg.sae, cfg.storage)} does not name its dataset; pass --data")
    checked: dict = {}
    check = _explain_checks(cfg, sae, record, checked)

    with run_start(cfg, EXPLAIN_KIND, defaults=record.defaults(sae_source(cfg.sae, cfg.storage)),
                   check=check) as run:
        if run.state == "done":
            log.info("%s holds this run, finished: nothing asked (its summary, as written then)", cfg.out)
            return ExplainSummary.from_json(run.rundir.summary())
        # a missing or refused key, nothing listening, a local model that does not load: refused now, before
        # run.json and the passes (GET /models costs no tokens)
        checked["client"] = make_client(cfg.client())
        checked["client"].check()
        run.hooks = [record.hook]
        run.begin(cfg, seeds={"seed": cfg.seed})
        out = Storage(cfg.out, cfg.storage)
        min_position = rows_min_position(sae, cfg.min_position)
        t1 = time.perf_counter()
        contexts = _contexts(cfg, sae, record.hook, run.ds, out, min_position, checked["meta"])
        requests = {c.latent: _explain_request(cfg, c) for c in contexts if c.shown}
        t2 = time.perf_counter()
        usage = _ask(cfg, cfg.client(), list(requests.values()), "explanation", checked.get("client"),
                     accept=lambda ans: parse_explanation(ans.text))  # an empty answer is not kept
        t3 = time.perf_counter()
        rows, unmarked = _explanations(cfg, requests, AnswerCache(out))
        out.put_bytes(EXPLANATIONS, _jsonl(rows))
        summary = ExplainSummary(**run.recorded(), out=out.display(), explainer=cfg.explainer,
                                 model=cfg.explainer_model, latents=len(contexts), explained=len(rows),
                                 unmarked=unmarked, skipped=sum(not c.shown for c in contexts),
                                 failed=len(requests) - len(rows), calls=usage.calls, cached=usage.cached,
                                 prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
                                 cost_usd=_cost(cfg, usage),
                                 seconds=round(time.perf_counter() - t0, 2), sae_digest=sae_digest(sae),
                                 contexts_seconds=round(t2 - t1, 2),
                                 ask_seconds=round(t3 - t2, 2))
        page = report.explain_page(summary.to_json(), rows, contexts).encode()
        out.put_bytes("report.html", page)
        if summary.failed:
            why = "; ".join(usage.errors)
            raise InterpError(f"{summary.failed} of {len(requests)} latents got no explanation ({why}); the "
                              f"{len(rows)} answered are in {out.display(EXPLANATIONS)}: rerun the same "
                              "command to ask only the others")
        run.rundir.finish(summary.to_json())
        out.put_bytes("report.html", page)  # the run's own page, not the generic one finish() draws
    log.info("explained %d of %d latents (%d skipped: never fire); open %s; next: actlake sae score "
             "--explanations %s", summary.explained, summary.latents, summary.skipped,
             out.display("report.html"), cfg.out)
    return summary


def _contexts(cfg: SaeExplainConfig, sae, hook: str, ds, out: Storage, min_position: int,
              meta) -> list[LatentContexts]:
    """The selected latents' contexts: read back when a killed run wrote them (same settings: same contexts),
    else from the two passes over the dataset."""
    if out.exists(CONTEXTS):
        return [LatentContexts.from_json(d) for d in _read_jsonl(out, CONTEXTS)]
    from analysis.sae.dashboard.collect import LatentCollector
    from analysis.sae.dashboard.run import _encode, _kept_batches, _Tokens
    from analysis.sae.dashboard.views import TextView
    from shards.columns import EXAMPLE_ID, TOKEN_ID

    view = TextView(meta.column(EXAMPLE_ID).to_numpy(), meta.column(TOKEN_ID).to_numpy(),
                    _Tokens(ds, cfg.tokenizer), cfg.context)
    plan = ContextPlan(cfg.top, cfg.quantile_examples, cfg.held_out, cfg.not_active, cfg.context, cfg.seed)
    info = table_info(ds, hook, min_position, plan.n_top, sae_digest(sae), cfg.seed)
    table = read_kept_table(out, info)
    if table is None:
        collector = LatentCollector(sae.d_sae, plan.n_top, seed=cfg.seed)
        with Progress(len(meta), "row", "collecting contexts", log) as progress:
            for batch, keep in _kept_batches(ds, hook, cfg.batch_size, min_position):
                collector.add(_encode(sae, batch["x"]), keep)
                progress.update(len(batch["x"]))
        table = collector.table()
        out.put_bytes(TABLE, table.to_npz())
        out.put_bytes(TABLE_INFO, json.dumps(info).encode())
    else:
        log.info("the collection pass kept in %s serves this run (same SAE, rows, dataset version and seed)",
                 out.display())
    log.info("reading the activations of the contexts' tokens: one more pass over %d rows", len(meta))
    latents = select_latents(cfg.latents, table.frequency, cfg.seed)  # top:N and random:N need the frequencies
    contexts = collect(sae, ds, hook, latents, plan, view, table, batch_size=cfg.batch_size,
                       min_position=min_position)
    out.put_bytes(CONTEXTS, _jsonl(c.to_json() for c in contexts))
    return contexts


def _explain_request(cfg: SaeExplainConfig, c: LatentContexts) -> Request:
    msgs = explain_messages([(x.tokens, x.acts) for x in c.shown], threshold=cfg.threshold,
                            show_activations=cfg.show_activations, scale=c.max_act or None)
    return Request(cfg.explainer, cfg.explainer_model, msgs, cfg.max_tokens, cfg.temperature)


def _ask(cfg, spec, reqs: list[Request], what: str, client=None, accept=None) -> Usage:
    try:
        return ask_all(reqs, spec, cfg.out, cfg.storage, concurrency=cfg.concurrency, workers=cfg.workers,
                       address=cfg.address, what=what, client=client, accept=accept)
    except FatalClientError as e:
        raise InterpError(f"{e}; the answers received so far are kept: rerun the same command once fixed") from None


def _explanations(cfg: SaeExplainConfig, requests: dict[int, Request], cache: AnswerCache) -> tuple[list, int]:
    have, rows, unmarked = cache.keys(), [], 0
    for lat, req in requests.items():
        if req.key() not in have:
            continue
        ans = cache.get(req.key())
        try:
            expl, marked = parse_explanation(ans.text if ans is not None else "")
        except MalformedAnswerError:
            continue  # a damaged or empty cached answer: not an explanation (the latent counts as failed)
        unmarked += not marked
        rows.append({"latent": lat, "explanation": expl, "marked": marked, "prompt_hash": req.key(),
                     "explainer": cfg.explainer, "model": cfg.explainer_model,
                     "sampling": {"temperature": cfg.temperature, "max_tokens": cfg.max_tokens, "top": cfg.top,
                                  "quantile_examples": cfg.quantile_examples, "context": cfg.context,
                                  "threshold": cfg.threshold, "show_activations": cfg.show_activations,
                                  "seed": cfg.seed}})
    return rows, unmarked


# ---------------------------------------------------------------------------------------------- sae score


@dataclass(kw_only=True)
class ScoreSummary(JsonRecord):
    """``summary.json`` of ``sae score``: per scorer, the mean of each metric over latents (own explanations and,
    beside, the random baseline) and the distribution of balanced accuracy."""

    out: str
    explanations: str
    client: str
    model: str
    latents: int  #: latents scored
    unscored: list = field(default_factory=list)  #: explained latents with nothing to tell apart
    scorers: dict = field(default_factory=dict)
    calls: int = 0
    cached: int = 0
    failed_prompts: int = 0
    unreadable_answers: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = None
    seconds: float = 0.0
    settings: dict = field(default_factory=dict)


def _baseline(latents: list[int], seed: int) -> dict[int, int]:
    """Each latent -> another latent whose explanation it is scored with (a random derangement)."""
    if len(latents) < 2:
        return {}
    rng = random.Random(seed)
    while True:
        perm = latents[:]
        rng.shuffle(perm)
        if all(a != b for a, b in zip(latents, perm, strict=True)):
            return dict(zip(latents, perm, strict=True))


def score_run(cfg: SaeScoreConfig) -> ScoreSummary:
    """Every explanation scored by every scorer (and the baseline), each prompt asked once."""
    t0 = time.perf_counter()
    src = Storage(cfg.explanations, cfg.storage)
    expl, ctxs, kind, model = _scoring_inputs(cfg, src)
    settings = {"scorers": cfg.scorers, "client": kind, "model": model, "per_prompt": cfg.per_prompt,
                "log_prob": cfg.log_prob, "baseline": cfg.baseline, "seed": cfg.seed,
                "explanations": explanations_digest([expl[k]["prompt_hash"] for k in sorted(expl)])}
    out = Storage(cfg.out, cfg.storage)
    refuse_dataset_place(out)
    writable(out)
    with output_lock(out, "score output"):
        done = _finished_scores(cfg, out, settings)
        if done is not None:
            return done
        spec = cfg.spec(kind, model, "--model")
        client = make_client(spec)  # a missing key or a model that does not load fails now
        client.check()
        swap = _baseline(sorted(ctxs), cfg.seed) if cfg.baseline else {}
        if cfg.baseline and not swap:
            log.warning("one latent explained: no other latent's explanation to score it with (no baseline)")
        plan, unscored = _plan(cfg, kind, model, ctxs, expl, swap)
        if unscored:
            log.warning("%d latents have no held-out or no non-activating contexts to tell apart (a latent firing "
                        "on every window has no quiet one): not scored (%s)", len(unscored),
                        ",".join(map(str, unscored[:20])))
        usage = _ask(cfg, spec, [req for _, _, _, req, _ in plan], "scorer prompt", client)
        scores, preds, unreadable = _read(cfg, plan, AnswerCache(out))
        out.put_bytes(SCORES, _jsonl(asdict(s) for s in scores))
        out.put_bytes(PREDICTIONS, _jsonl(preds))
        _say_unreadable(cfg, plan, unreadable, scores, AnswerCache(out))
        summary = ScoreSummary(out=out.display(), explanations=src.display(), client=kind, model=model,
                               latents=len(ctxs) - len(unscored), unscored=unscored, scorers=_means(scores),
                               calls=usage.calls, cached=usage.cached,
                               failed_prompts=usage.failed, unreadable_answers=unreadable,
                               prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
                               cost_usd=_cost(cfg, usage),
                               seconds=round(time.perf_counter() - t0, 2), settings=settings)
        out.put_bytes("report.html", report.score_page(summary.to_json(), scores, expl).encode())
        if usage.failed:
            raise InterpError(f"{usage.failed} scorer prompts got no answer ({'; '.join(usage.errors)}); rerun the "
                              "same command to ask only those")
        if plan and unreadable == len(plan):
            raise InterpError(f"none of the scorer's {unreadable} answers could be read as a list of 0s and 1s, one "
                              f"per example ({model} cannot do this task): score with a stronger model (--model, "
                              f"--client); every answer is in {out.display('answers')}/")
        out.put_bytes("summary.json", json.dumps(summary.to_json(), indent=1).encode())
    log.info("scored %d latents (balanced accuracy, own explanation vs random): %s; %s", summary.latents,
             ", ".join(f"{s} {_fmt(v.get('own'))} vs {_fmt(v.get('random'))}" for s, v in summary.scorers.items()),
             out.display("report.html"))
    return summary


def _scoring_inputs(cfg: SaeScoreConfig, src: Storage) -> tuple[dict, dict, str, str]:
    """(explanations by latent, their contexts, client kind, model) of the `sae explain` output ``src``."""
    if not (src.exists(EXPLANATIONS) and src.exists(CONTEXTS)):
        raise InterpConfigError(f"--explanations {src.display()} holds no {EXPLANATIONS} and {CONTEXTS}: give the "
                                "--out of an `actlake sae explain` run")
    expl = {int(r["latent"]): r for r in _read_jsonl(src, EXPLANATIONS)}
    if not expl:
        raise InterpConfigError(f"--explanations {src.display()}: no latent was explained")
    first = next(iter(expl.values()))
    ctxs = {c.latent: c for c in (LatentContexts.from_json(d) for d in _read_jsonl(src, CONTEXTS))
            if c.latent in expl}
    return expl, ctxs, cfg.client or first["explainer"], cfg.model or first["model"]


def _finished_scores(cfg: SaeScoreConfig, out: Storage, settings: dict) -> ScoreSummary | None:
    """The scores already at ``out`` when made with these settings; another scoring run's are refused, or with
    --overwrite replaced (its answers stay: they are keyed by request)."""
    if not out.exists("summary.json"):
        return None
    try:
        done = ScoreSummary.from_json(json.loads(out.get_bytes("summary.json")))
    except (TypeError, KeyError, ValueError):
        raise InterpConfigError(f"--out {out.display()} holds the output of another command; give `sae score` a "
                                "folder of its own (default: EXPLANATIONS/scores)") from None
    if done.settings == settings:
        log.info("%s holds these scores, finished: nothing asked", out.display())
        return done
    if not cfg.overwrite:
        changed = sorted(k for k in settings if done.settings.get(k) != settings[k])
        raise InterpConfigError(f"--out {out.display()} holds scores made with other settings ({', '.join(changed)})"
                                "; pass --overwrite to replace them (answers already received are kept), or "
                                "another --out")
    out.delete("summary.json")
    return None


def _say_unreadable(cfg: SaeScoreConfig, plan, unreadable: int, scores, cache: AnswerCache) -> None:
    """Warn of answers that could not be read (with one of them), and of --log-prob without log-probabilities."""
    if unreadable:
        have = cache.keys()
        texts = ((cache.get(req.key()), len(batch)) for _, _, _, req, batch in plan if req.key() in have)
        example = next((a.text for a, n in texts if a is not None and _unreadable(a.text, n)), "")
        log.warning("%d of %d scorer answers could not be read as one 0/1 per example (e.g. %r): their samples are "
                    "left out of the scores", unreadable, len(plan), example[:80])
    if cfg.log_prob and unreadable < len(plan) and scores and all(s.auroc is None for s in scores):
        log.warning("--log-prob: the scorer's answers carry no usable log-probabilities (top 5 per token with "
                    "0 and 1 among them): no AUROC")


def _unreadable(text: str, n: int) -> bool:
    try:
        parse_predictions(text, n)
        return False
    except MalformedAnswerError:
        return True


def _cost(cfg, usage: Usage) -> float | None:
    """USD of the tokens billed in this run; None when no price was given (not computed, rather than free)."""
    return usage.cost(cfg.price_in, cfg.price_out) if cfg.price_in or cfg.price_out else None


def _fmt(m: dict | None) -> str:
    return "-" if not m or m.get("accuracy") is None else f"{m['accuracy']:.3f}"


def _plan(cfg: SaeScoreConfig, kind: str, model: str, ctxs: dict[int, LatentContexts], expl: dict, swap: dict):
    """(latent, scorer, own|random, request, samples of the prompt) for every prompt to ask; the latents with
    nothing to tell apart."""
    plan, unscored = [], []
    for lat, c in ctxs.items():
        if not c.held_out or not c.not_active:
            unscored.append(lat)
            continue
        for scorer in cfg.scorers:
            for which, text in (("own", expl[lat]["explanation"]),
                                *((("random", expl[swap[lat]]["explanation"]),) if lat in swap else ())):
                for batch in batches(samples_for(scorer, c.held_out, c.not_active), cfg.per_prompt, cfg.seed):
                    msgs = classify_messages(scorer, text, [s.text for s in batch])
                    req = Request(kind, model, msgs, max_tokens=8 + 3 * len(batch), temperature=0.0,
                                  logprobs=5 if cfg.log_prob else 0)
                    plan.append((lat, scorer, which, req, batch))
    return plan, unscored


def _read(cfg: SaeScoreConfig, plan, cache: AnswerCache) -> tuple[list[Score], list[dict], int]:
    have, groups, preds, unreadable = cache.keys(), {}, [], 0
    for lat, scorer, which, req, batch in plan:
        answered = req.key() in have
        p, probs = None, None
        ans = cache.get(req.key()) if answered else None
        if ans is not None:
            try:
                p = parse_predictions(ans.text, len(batch))
                probs = parse_probabilities(ans.logprobs, len(batch)) if cfg.log_prob else None
            except MalformedAnswerError:
                unreadable += 1
        samples = [Sample(s.text, s.activating, p[i] if p else None, probs[i] if probs else None)
                   for i, s in enumerate(batch)]
        groups.setdefault((lat, scorer, which), []).extend(samples)
        preds += [{"latent": lat, "scorer": scorer, "explanation": which, "text": s.text,
                   "activating": s.activating, "prediction": s.prediction, "probability": s.probability,
                   "prompt_hash": req.key()} for s in samples]
    return [score(lat, sc, which, ss) for (lat, sc, which), ss in groups.items()], preds, unreadable


def _means(scores: list[Score]) -> dict:
    out: dict = {}
    for s in scores:
        out.setdefault(s.scorer, {}).setdefault(s.explanation, []).append(s)
    summary = {}
    for scorer, by in out.items():
        summary[scorer] = {}
        for which, all_ss in by.items():
            ss = [s for s in all_ss if s.accuracy is not None]  # a latent none of whose answers could be read
            acc = np.array([s.accuracy for s in ss])
            aucs = [s.auroc for s in ss if s.auroc is not None]
            mean = lambda v: round(float(np.mean(v)), 4) if len(v) else None  # noqa: E731
            summary[scorer][which] = {
                "latents": len(ss), "unreadable_latents": len(all_ss) - len(ss), "accuracy": mean(acc),
                "f1": mean([s.f1 for s in ss]), "precision": mean([s.precision for s in ss]),
                "recall": mean([s.recall for s in ss]), "auroc": mean(aucs),
                "accuracy_quantiles": {f"p{q}": round(float(np.quantile(acc, q / 100)), 4)
                                       for q in (10, 25, 50, 75, 90)} if len(acc) else {},
                "failed_samples": int(sum(s.failed for s in all_ss))}
    return summary


__all__ = ["explain", "score_run", "ExplainSummary", "ScoreSummary", "ClientError"]
