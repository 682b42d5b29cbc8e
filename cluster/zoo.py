"""``actlake extract --zoo zoo.yaml --out PREFIX``: one extraction per model, each into ``PREFIX/NAME`` (models × hooks
× pools), as thingsvision / Net2Brain / Brain-Score sweep a model zoo. Every entry is checked before the first model
loads (YAML, names, options, and that its model can be found: a factory imports, a directory or package exists), then
every model still to run is planned on the driver (``check_zoo``: its hooks, options and ``--intervene`` sources
resolved against the loaded model) before the first one runs; each model then runs as an ordinary job on Ray
(``--workers`` actors, each loading it once) and resumes exactly once; ``PREFIX/zoo.json`` records the finished
models, so a rerun after a kill goes straight to the first unfinished one (a damaged ``zoo.json`` is rebuilt: every
model's extraction resumes from its dataset, and finished ones write nothing).

A zoo file::

    models:
      - {name: lite0, model: "ingest.model_zoo.efficientnet_lite0:load", hooks: "block.*", pool: spatial_mean}
      - {name: lite0-untrained, model: "ingest.model_zoo.efficientnet_lite0:load_untrained", hooks: "block.*"}
      - {name: vit-random, model: ./vit-dir, hooks: "resid.*", pool: cls}

Any option of ``actlake extract`` but ``out`` and ``zoo`` may be given per model; the command line gives the
rest (``--data``, ``--dtype``, ``--workers`` ...)."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from dataclasses import dataclass, field

import yaml

from ingest.config import ExtractConfig
from shards.errors import ActlakeError, ConfigError
from shards.layout import LOCK, MANIFEST
from shards.records import JsonRecord
from shards.storage import Storage

log = logging.getLogger("actlake.extract")
ZOO_STATE = "zoo.json"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
#: names a model's folder may not take under the prefix (compared without case: some disks ignore it): the zoo's
#: own record (a folder named zoo.json makes it unwritable, so the zoo could never finish) and a dataset's files
#: (a folder named manifest.json makes the prefix look like a dataset to `ls` and to the output checks)
RESERVED_NAMES = (ZOO_STATE, MANIFEST, "README.md", LOCK)
RESERVED = frozenset(n.lower() for n in RESERVED_NAMES)
#: settings that do not change a model's dataset (how it runs, not what it writes)
NEUTRAL = frozenset({"workers", "threads_per_worker", "address", "max_retries", "storage", "zoo", "out",
                     "zoo_parallel"})
#: --zoo-parallel 0: at most this many models at once (more rarely pays: each loads its model on the driver too)
MAX_AUTO_PARALLEL = 4
#: --zoo-parallel 0: a second model runs beside the first only when every model still gets this many cores. On 2
#: cores two models side by side took 136 s against 118 s one after another (docs/benchmarks.md, issue 39): the
#: forward passes already use every core, and a model left alone keeps the threads it was given
MIN_AUTO_CORES = 4


@dataclass
class ZooModel:
    """One model of the zoo: its dataset's name under the prefix and its full extraction config."""

    name: str
    config: ExtractConfig

    def fingerprint(self) -> str:
        settings = {k: v for k, v in dataclasses.asdict(self.config).items() if k not in NEUTRAL}
        return json.dumps(settings, sort_keys=True, default=str)


@dataclass(kw_only=True)
class ZooSummary(JsonRecord):
    out: str
    models: list[str]
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  #: finished by an earlier run with the same settings
    datasets: dict[str, dict] = field(default_factory=dict)  #: per model: what its extraction returned
    failed: dict[str, str] = field(default_factory=dict)  #: per model that failed: its error (rerun to retry)
    parallel: int = 1  #: models extracted at once
    seconds: float = 0.0


class ZooFailedError(ActlakeError, RuntimeError):
    """Some models of the zoo failed (the others finished and are recorded); rerun to retry the failed ones."""

    def __init__(self, message: str, summary: ZooSummary) -> None:
        super().__init__(message)
        self.summary = summary


def _read_zoo_file(cfg: ExtractConfig):
    """The zoo file's YAML document; a ConfigError naming the file and the problem (line, column) otherwise."""
    st, name = Storage.for_file(cfg.zoo, cfg.storage)
    try:
        data = st.get_bytes(name)
    except FileNotFoundError:
        raise ConfigError(f"--zoo {cfg.zoo}: no such file") from None
    try:
        return yaml.safe_load(data)
    except yaml.YAMLError as exc:  # a syntax error, a tab, a binary file: its message says where
        where = getattr(exc, "problem_mark", None)
        at = f" (line {where.line + 1}, column {where.column + 1})" if where is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"--zoo {cfg.zoo}: not a YAML zoo file{at}: {problem}. Write `models:` followed by a list "
                          "of {name, model, ...} entries (see `actlake extract --help`, --zoo)") from None


def _check_name(zoo: str, i: int, entry) -> str:
    """The model's name, refused here when it cannot be a dataset folder under the prefix."""
    if not isinstance(entry, dict) or not NAME.fullmatch(str(entry.get("name", ""))) or "model" not in entry:
        raise ConfigError(f"--zoo {zoo}: entry {i + 1} needs a `name` (1 to 100 letters, digits, . _ -, starting "
                          f"with a letter or digit) and a `model`; got {entry!r}")
    name = str(entry["name"])
    low = name.lower()
    if low in RESERVED or any(low.startswith(f"{r}.") for r in RESERVED):
        raise ConfigError(f"--zoo {zoo}: model {name!r}: the name is reserved under --out ({ZOO_STATE}: the zoo's "
                          f"record of finished models; {', '.join(RESERVED_NAMES[1:])}: a dataset's files; and any "
                          "of them followed by a dot): a dataset folder of that name would leave the zoo unable to "
                          "record or resume its models. Rename the model.")
    if not isinstance(entry["model"], str) or not entry["model"].strip():
        raise ConfigError(f"--zoo {zoo}: model {name!r}: `model` must be a local directory, an installed package "
                          f"or a factory 'package.module:function'; got {entry['model']!r}")
    return name


def check_model(zoo: str, name: str, spec: str) -> None:
    """Refuse, before any model of the zoo runs, a model that cannot be found: a factory whose module does not
    import or lacks the function, a directory or package that is not there. Nothing is loaded (a factory's
    module is imported, which is what "importable" means; the weights are built only when the model runs)."""
    import importlib
    from pathlib import Path

    from shards.modelpaths import ModelLoadError, resolve_model_path

    if ":" in spec and not Path(spec).exists():  # a factory, as ingest.models.load_model tells them apart
        module, _, function = spec.partition(":")
        try:
            fn = getattr(importlib.import_module(module), function)
        except Exception as exc:  # noqa: BLE001 - any failure to import it is this entry's problem, named
            raise ConfigError(f"--zoo {zoo}: model {name!r}: the factory {spec!r} is not importable "
                              f"({type(exc).__name__}: {exc}). No model has run; fix the entry and rerun.") from None
        if not callable(fn):
            raise ConfigError(f"--zoo {zoo}: model {name!r}: {spec!r} is not a function. No model has run.")
        return
    try:
        resolve_model_path(spec)
    except ModelLoadError as exc:
        raise ConfigError(f"--zoo {zoo}: model {name!r}: {exc} No model has run; fix the entry and rerun.") from None


def load_zoo(cfg: ExtractConfig) -> list[ZooModel]:
    """Every model of ``cfg.zoo`` as a checked config (not YAML, bad or reserved names, unknown options,
    duplicates, a model that cannot be found: refused here, before any model runs)."""
    doc = _read_zoo_file(cfg)
    entries = doc.get("models") if isinstance(doc, dict) else doc
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"--zoo {cfg.zoo}: expected `models:` with a list of {{name, model, ...}} entries")
    allowed = {f.name for f in dataclasses.fields(ExtractConfig)} - {"out", "zoo"}
    out, seen = [], set()
    for i, e in enumerate(entries):
        name = _check_name(cfg.zoo, i, e)
        unknown = sorted(set(e) - allowed - {"name"})
        if unknown:
            raise ConfigError(f"--zoo {cfg.zoo}: model {name!r}: unknown options {unknown} (any option of "
                              "`actlake extract` but out and zoo)")
        if name.lower() in seen:  # folders that differ only in case are one folder on some disks
            raise ConfigError(f"--zoo {cfg.zoo}: the name {name!r} is used twice (names are dataset folders, "
                              "compared without case)")
        seen.add(name.lower())
        settings = {k: v for k, v in e.items() if k != "name"}
        out.append(ZooModel(name, dataclasses.replace(cfg, zoo="", out=f"{cfg.out.rstrip('/')}/{name}",
                                                      **settings)))
    for m in out:  # only once every entry has been read: the cheap mistakes are reported first
        check_model(cfg.zoo, m.name, m.config.model)
    return out


def _read_state(prefix: Storage) -> dict:
    """``zoo.json``: per model, the fingerprint and summary of its finished extraction. A damaged one (cut short
    by a full disk, edited by hand) is rebuilt from the models' datasets, which are the truth: every model is then
    run again, and its extraction resumes from what its dataset holds (a finished one writes nothing new; one
    with other settings is refused by its own job identity)."""
    try:
        state = json.loads(prefix.get_bytes(ZOO_STATE))
    except FileNotFoundError:
        return {}
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        state = exc
    if isinstance(state, dict) and all(isinstance(v, dict) for v in state.values()):
        return state
    problem = state if isinstance(state, Exception) else f"not an object of models but {type(state).__name__}"
    log.warning("zoo: %s is damaged (%s): rebuilding it from the models' datasets; each model's extraction "
                "resumes from what its dataset holds (nothing is extracted twice)", prefix.display(ZOO_STATE),
                problem)
    return {}


def _finished(state: dict, prefix: Storage, m: ZooModel) -> bool:
    """Whether ``m`` finished in an earlier run with the same settings (its dataset is still there)."""
    done = state.get(m.name) or {}
    return ("summary" in done and done.get("fingerprint") == m.fingerprint()
            and prefix.exists(f"{m.name}/{MANIFEST}"))


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def failure_text(exc: BaseException) -> str:
    """One line naming a model's failure: an actor's own error rather than Ray's wrapper (its traceback and
    terminal colours), for zoo.json and the command's message."""
    cause = getattr(exc, "cause", None)
    exc = cause if isinstance(cause, BaseException) else exc
    from shards.secrets import redact_message

    text = redact_message(_ANSI.sub("", str(exc))).strip()  # zoo.json and logs never hold a URI's password
    first = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {first[:500]}" if first else type(exc).__name__


def check_zoo(zoo: str, models: list[ZooModel], check) -> None:
    """Every model still to run checked with ``check(config)`` (the extraction's own planning: its model loaded on
    the driver, its hooks, options and ``--intervene`` sources resolved) before the first one runs: a bad hook or a
    missing intervention file of the last model must not surface after the others ran for hours."""
    for i, m in enumerate(models):
        log.info("zoo: checking %s (%d of %d) before any model runs", m.name, i + 1, len(models))
        try:
            check(m.config)
        except ActlakeError as exc:  # a refusal of the plan: an unknown hook, a missing source, a bad option
            raise ConfigError(f"--zoo {zoo}: model {m.name!r}: {exc} No model has run; fix the entry and "
                              "rerun.") from None
        except Exception as exc:  # noqa: BLE001 - the model itself failed while planned (its load or probe pass)
            raise ConfigError(f"--zoo {zoo}: model {m.name!r} failed while it was checked (loading it and running "
                              f"its probe batch): {failure_text(exc)}. No model has run; fix the entry (or leave "
                              "it out) and rerun.") from None


def zoo_parallel(cfg: ExtractConfig, todo: list[ZooModel], cpus: int) -> int:
    """How many models run at once: ``--zoo-parallel``, or as many as ``cpus`` hold at ``MIN_AUTO_CORES`` per
    actor (at most ``MAX_AUTO_PARALLEL``), never more than there are models to run."""
    if cfg.zoo_parallel:
        return max(1, min(cfg.zoo_parallel, len(todo)))
    per_model = max((m.config.workers for m in todo), default=1) * MIN_AUTO_CORES
    return max(1, min(MAX_AUTO_PARALLEL, len(todo), cpus // per_model))


def _shared_cores(models: list[ZooModel], parallel: int, cpus: int) -> list[ZooModel]:
    """Models running ``parallel`` at once share the cores: each actor gets cpus // (parallel x workers) threads
    (and as many Ray CPUs), unless the model sets --threads-per-worker itself."""
    if parallel == 1:
        return models
    return [m if m.config.threads_per_worker else ZooModel(m.name, dataclasses.replace(
        m.config, threads_per_worker=max(1, cpus // (parallel * m.config.workers)))) for m in models]


def _side_by_side(one, models: list[ZooModel], parallel: int) -> None:
    """``one(model)`` for every model, ``parallel`` at a time. One at a time runs in this thread, as before; side
    by side in daemon threads this thread waits on in short joins, so that Ctrl-C (which reaches only the main
    thread) ends the command at once: the running jobs then stop as after a kill, each resumable unit by unit
    (an executor's threads would keep the process alive until every running model had finished)."""
    if parallel == 1:
        for m in models:
            one(m)
        return
    import queue
    import threading

    todo: queue.SimpleQueue = queue.SimpleQueue()
    for m in models:
        todo.put(m)
    errors: list[BaseException] = []

    def worker() -> None:
        while not errors:
            try:
                m = todo.get_nowait()
            except queue.Empty:
                return
            try:
                one(m)  # records its model's failure itself: anything raised here is ours
            except BaseException as exc:  # noqa: BLE001 - handed to the main thread, which raises it
                errors.append(exc)

    threads = [threading.Thread(target=worker, name=f"zoo-{i}", daemon=True) for i in range(parallel)]
    for t in threads:
        t.start()
    for t in threads:
        while t.is_alive():
            t.join(0.5)
    if errors:
        raise errors[0]


def run_zoo(cfg: ExtractConfig, extract, check=None, cpus: int | None = None) -> ZooSummary:
    """Extract every model of the zoo with ``extract(config)``, up to ``zoo_parallel`` at once (threads of this
    driver, each one job on the shared Ray runtime), skipping those finished before; with ``check``, every model
    still to run is checked first (``check_zoo``). A model whose extraction fails is recorded in ``zoo.json``
    (its error) while the others go on; ZooFailedError names the failed ones at the end. ``cpus``: the Ray
    cluster's CPUs (default: asked of Ray)."""
    import time
    from threading import Lock

    t0 = time.perf_counter()
    models = load_zoo(cfg)
    prefix = Storage(cfg.out, cfg.storage)
    state = _read_state(prefix)
    todo = [m for m in models if not _finished(state, prefix, m)]
    if check is not None:
        check_zoo(cfg.zoo, todo, check)
    summary = ZooSummary(out=prefix.display(), models=[m.name for m in models])
    for i, m in enumerate(models):
        if not _finished(state, prefix, m):
            continue
        log.info("zoo: %s finished before (%d of %d), skipped", m.name, i + 1, len(models))
        summary.skipped.append(m.name)
        summary.datasets[m.name] = state[m.name].get("summary", {})
    if todo and cpus is None:
        from shards.runtime import connect_ray

        cpus = int(connect_ray(cfg.address).cluster_resources().get("CPU", 1))
    parallel = summary.parallel = zoo_parallel(cfg, todo, cpus or 1)
    order = {m.name: i for i, m in enumerate(models)}
    lock = Lock()  # zoo.json and the summary are written by whichever model finishes

    def one(m: ZooModel) -> None:
        log.info("zoo: extracting %s (%d of %d): %s", m.name, order[m.name] + 1, len(models), m.config.model)
        try:
            result, error = extract(m.config).to_json(), ""
        except Exception as exc:  # noqa: BLE001 - any failure of one model is recorded; the others go on
            result, error = None, failure_text(exc)
            log.error("zoo: %s failed (%s); the other models go on", m.name, error)
        with lock:
            state[m.name] = ({"fingerprint": m.fingerprint(), "summary": result} if error == "" else
                             {"fingerprint": m.fingerprint(), "failed": error})
            prefix.put_bytes(ZOO_STATE, json.dumps(state, indent=1, default=str).encode())
            if error:
                summary.failed[m.name] = error
            else:
                summary.ran.append(m.name)
                summary.datasets[m.name] = result

    runs = _shared_cores(todo, parallel, cpus or 1)
    if parallel > 1:
        log.info("zoo: %d models to run, %d at a time", len(runs), parallel)
    _side_by_side(one, runs, parallel)
    summary.ran.sort(key=order.__getitem__)
    summary.seconds = round(time.perf_counter() - t0, 2)
    if summary.failed:
        names = ", ".join(f"{n} ({e.splitlines()[0][:200]})" for n, e in summary.failed.items())
        raise ZooFailedError(f"zoo {prefix.display()}: {len(summary.failed)} of {len(models)} models failed: "
                             f"{names}. The others finished ({prefix.display(ZOO_STATE)}); fix the failed entries "
                             "and rerun: finished models are skipped.", summary)
    return summary
