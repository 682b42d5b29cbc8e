"""``actlake extract --zoo zoo.yaml --out PREFIX``: one extraction per model, each into ``PREFIX/NAME`` (models ×
hooks × pools), as thingsvision / Net2Brain / Brain-Score sweep a model zoo. Every entry is checked before the
first model loads; each model then runs as an ordinary job on Ray (``--workers`` actors, each loading it once)
and resumes exactly once; ``PREFIX/zoo.json`` records the finished models, so a rerun after a kill goes straight
to the first unfinished one.

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
from shards.errors import ConfigError
from shards.layout import MANIFEST
from shards.records import JsonRecord
from shards.storage import Storage

log = logging.getLogger("actlake.extract")
ZOO_STATE = "zoo.json"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
#: settings that do not change a model's dataset (how it runs, not what it writes)
NEUTRAL = frozenset({"workers", "threads_per_worker", "address", "max_retries", "storage", "zoo", "out"})


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


def load_zoo(cfg: ExtractConfig) -> list[ZooModel]:
    """Every model of ``cfg.zoo`` as a checked config (bad names, unknown options, duplicates: refused here)."""
    parent, _, name = cfg.zoo.rpartition("/")
    try:
        doc = yaml.safe_load(Storage(parent or ".", cfg.storage).get_bytes(name))
    except FileNotFoundError:
        raise ConfigError(f"--zoo {cfg.zoo}: no such file") from None
    entries = doc.get("models") if isinstance(doc, dict) else doc
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"--zoo {cfg.zoo}: expected `models:` with a list of {{name, model, ...}} entries")
    allowed = {f.name for f in dataclasses.fields(ExtractConfig)} - {"out", "zoo"}
    out, seen = [], set()
    for i, e in enumerate(entries):
        if not isinstance(e, dict) or not NAME.fullmatch(str(e.get("name", ""))) or "model" not in e:
            raise ConfigError(f"--zoo {cfg.zoo}: entry {i + 1} needs a `name` (letters, digits, . _ -) and a "
                              f"`model`; got {e!r}")
        unknown = sorted(set(e) - allowed - {"name"})
        if unknown:
            raise ConfigError(f"--zoo {cfg.zoo}: model {e['name']!r}: unknown options {unknown} (any option of "
                              "`actlake extract` but out and zoo)")
        if e["name"] in seen:
            raise ConfigError(f"--zoo {cfg.zoo}: the name {e['name']!r} is used twice; names are dataset folders")
        seen.add(e["name"])
        settings = {k: v for k, v in e.items() if k != "name"}
        out.append(ZooModel(e["name"], dataclasses.replace(cfg, zoo="", out=f"{cfg.out.rstrip('/')}/{e['name']}",
                                                           **settings)))
    return out


def run_zoo(cfg: ExtractConfig, extract) -> ZooSummary:
    """Extract every model of the zoo in turn with ``extract(config)``, skipping those finished before."""
    models = load_zoo(cfg)
    prefix = Storage(cfg.out, cfg.storage)
    state = json.loads(prefix.get_bytes(ZOO_STATE)) if prefix.exists(ZOO_STATE) else {}
    summary = ZooSummary(out=prefix.display(), models=[m.name for m in models])
    for i, m in enumerate(models):
        done = state.get(m.name) or {}
        if done.get("fingerprint") == m.fingerprint() and prefix.exists(f"{m.name}/{MANIFEST}"):
            log.info("zoo: %s finished before (%d of %d), skipped", m.name, i + 1, len(models))
            summary.skipped.append(m.name)
            summary.datasets[m.name] = done.get("summary", {})
            continue
        log.info("zoo: extracting %s (%d of %d): %s", m.name, i + 1, len(models), m.config.model)
        result = extract(m.config).to_json()
        state[m.name] = {"fingerprint": m.fingerprint(), "summary": result}
        prefix.put_bytes(ZOO_STATE, json.dumps(state, indent=1, default=str).encode())
        summary.ran.append(m.name)
        summary.datasets[m.name] = result
    return summary
