"""``actlake info | verify | ls | demo``: describing, checking, listing and demonstrating datasets."""

from __future__ import annotations

import dataclasses
import json
import re
import time

from cluster.commands import DemoConfig, InfoConfig, LsConfig, UnlockConfig, VacuumConfig, VerifyConfig, VersionsConfig
from shards.columns import EXAMPLE_ID, POSITION, TOKEN_ID
from shards.printable import printable
from shards.reader import Dataset, open_dataset
from shards.storage import Storage
from shards.verify import verify_dataset


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return str(n)


def describe(ds: Dataset) -> str:
    """The text ``actlake info`` prints: every field read from the manifest shown with its control characters
    escaped (``printable``), so a forged manifest cannot drive the terminal or forge a line."""
    m, p = ds.manifest, printable
    lines = [
        f"dataset   {p(ds.storage.display())}",
        f"id        {p(m.dataset_id)}  (format v{p(m.format_version)}, version {p(m.version)}, actlake "
        f"{p(m.code_version)})",
        f"created   {p(m.created)}   updated {p(m.updated)}",
        f"rows      {ds.num_rows:,}   units {len(ds.units)}   bytes {human_bytes(m.num_bytes)}   compression "
        f"{p(m.compression)}",
        "hooks:",
    ]
    for name, spec in ds.schema.hooks.items():
        stat = _stat_text(m.stats.get(name))
        lines.append(f"  {p(name):<24} {str(list(spec.shape)):<14} {p(spec.dtype):<9} {p(spec.encoding):<7}{stat}")
    lines.append(f"columns   {p(', '.join(ds.columns))}")
    for key, val in m.provenance.to_json().items():
        lines.append(f"{p(key):<9} {p(json.dumps(val, sort_keys=True)[:200])}")
    return "\n".join(lines)


def _stat_text(s) -> str:
    """A hook's statistics for ``info``: undefined ones (non-finite activations) said as such, never ``nan``."""
    if s is None:
        return ""
    if s.nonfinite:
        return f"  {s.nonfinite:,} non-finite values (NaN/inf): statistics undefined"
    return f"  mean‖x‖ {s.mean_norm:.4g}  max|x| {s.max_abs:.4g}  mean var {s.mean_variance:.4g}"


#: a version-like suffix at the end of a URI: ``@v3`` (``URI@vN``), and what is not one (``@v-1``, ``@vx``)
_VERSION_SUFFIX = re.compile(r"@v[^/@]*$")


def check_version_suffix(command: str, uri: str, storage, pins: bool = False) -> None:
    """A URI ending in ``@v…`` where no dataset is, but one is without the suffix: say what is wrong with the suffix
    (``actlake info DS@v-1`` said "no actlake dataset at DS@v-1", while DS exists). ``pins``: the command reads
    ``URI@vN`` (what is left here is no version number); else it takes the whole dataset, not a version."""
    from shards.errors import ConfigError
    from shards.layout import MANIFEST

    m = _VERSION_SUFFIX.search(uri)
    if m is None or Storage(uri, storage).exists(MANIFEST):
        return
    base = Storage(uri[:m.start()], storage)
    if not base.exists(MANIFEST):
        return  # no dataset either way: the command says so
    suffix, name = printable(m.group(0)), printable(base.display())
    if pins:
        raise ConfigError(f"{name}{suffix}: {suffix!r} is not a version: a version is pinned as URI@vN with N a whole "
                          f"number from 0, e.g. {name}@v3 (`actlake versions {name}` lists them)")
    raise ConfigError(f"{name}{suffix}: `actlake {command}` takes a dataset, not one of its versions: give {name} "
                      "(without the suffix)")


def cmd_info(cfg: InfoConfig) -> int:
    check_version_suffix("info", cfg.uri, cfg.storage, pins=True)
    ds = open_dataset(cfg.uri, cfg.storage, version=cfg.data_version)
    print(json.dumps(ds.manifest.to_json(), indent=1) if cfg.json else describe(ds))
    return 0


def cmd_verify(cfg: VerifyConfig) -> int:
    check_version_suffix("verify", cfg.uri, cfg.storage)
    report = verify_dataset(cfg.uri, cfg.storage, checksums=not cfg.no_checksums, repair=cfg.repair,
                            break_lock=cfg.break_lock, drop_damaged=cfg.drop_damaged, since=cfg.since)
    for line in report.lines():
        print(printable(line, keep_newlines=True))  # names and problems read from the dataset's files
    problems = [f"{len(report.bad)} bad unit(s)"] if report.bad else []
    problems += [f"{len(report.records)} bad commit record(s)"] if report.records else []
    problems += [f"{len(report.stats)} bad statistics file(s)"] if report.stats else []
    problems += [f"{len(report.versions)} bad version record(s)"] if report.versions else []
    status = "OK" if report.ok else f"FAILED: {', '.join(problems)}"
    versions = report.versions_checked
    span = f" in {len(versions)} versions ({versions[0]}..{versions[-1]})" if len(versions) > 1 else ""
    print(f"{printable(report.uri)}: {report.units_checked} units checked{span}, {status}")  # a path's ESC escaped
    return 0 if report.ok else 1


def cmd_versions(cfg: VersionsConfig) -> int:
    from shards.versions import versions

    check_version_suffix("versions", cfg.uri, cfg.storage)
    infos = versions(cfg.uri, cfg.storage)
    if cfg.json:
        for v in infos:
            print(json.dumps(dataclasses.asdict(v)))
        return 0
    print(f"{'version':>7}  {'time':<20}  {'rows':>12}  {'units':>6}  {'+':>5}  {'-':>5}  {'bytes':>10}  made by")
    for v in infos:
        if v.problem:
            print(f"{v.version:>7}  damaged: {printable(v.problem)} (`actlake verify --repair` sets it aside)")
            continue
        # "tick t000002 (schedule crawl)", "extract": each word once (it read "extract extract")
        parts = [f"tick {v.tick}"] if v.tick and v.operation == "tick" else [
            str(v.operation or ""), f"tick {v.tick}" if v.tick else ""]
        if v.job and v.job != v.operation:
            parts.append(f"({v.job})")
        made = " ".join(p for p in parts if p)
        print(f"{v.version:>7}  {printable(v.time):<20}  {v.rows:>12,}  {v.units:>6}  {v.units_added:>5}  "
              f"{v.units_removed:>5}  {human_bytes(v.bytes):>10}  {printable(made)}")
    return 0


def cmd_vacuum(cfg: VacuumConfig):
    from shards.versions import vacuum

    check_version_suffix("vacuum", cfg.uri, cfg.storage)
    return vacuum(cfg.uri, cfg.keep, cfg.storage, dry_run=cfg.dry_run, break_lock=cfg.break_lock, full=cfg.full)


def cmd_unlock(cfg: UnlockConfig) -> int:
    from shards.lock import break_lock

    check_version_suffix("unlock", cfg.uri, cfg.storage)
    storage = Storage(cfg.uri, cfg.storage)
    holder = break_lock(storage)
    if holder is None:
        print(f"{storage.display()}: not locked")
    else:
        who = "an unreadable lock" if holder.get("unreadable") else \
            f"the lock of host {holder.get('host')} pid {holder.get('pid')} (since {holder.get('acquired')})"
        print(printable(f"{storage.display()}: removed {who}"))  # the lock file is anyone's to write
    return 0


def cmd_ls(cfg: LsConfig) -> int:
    """The datasets under a prefix: model, modality, hooks, rows, bytes, newest version, last update."""
    from shards.catalog import list_datasets

    root = Storage(cfg.prefix, cfg.storage)
    found = list_datasets(root, cfg.depth, cfg.threads)
    if cfg.json:
        for s in found:
            print(json.dumps(s.to_json()))
        return 0
    if not found:
        print(f"no datasets under {printable(root.display())} (searched {cfg.depth} levels down)")
        return 0
    base = root.display().rstrip("/") + "/"
    # every field is a forged manifest's or a folder name's to choose: escaped, one dataset per line
    names = [printable(s.uri[len(base):] if s.uri.startswith(base) else s.uri) for s in found]
    width = max(12, *(len(n) for n in names))
    print(f"{'dataset':<{width}}  {'model':<22} {'modality':<8} {'rows':>12} {'bytes':>10} {'version':>7}  "
          f"{'updated':<20}  hooks")
    for name, s in zip(names, found, strict=True):
        if s.problem:
            print(f"{name:<{width}}  unreadable: {printable(s.problem)}")
            continue
        hooks = ",".join(s.hooks) if len(s.hooks) <= 6 else f"{','.join(s.hooks[:5])},… ({len(s.hooks)})"
        model, modality = printable(s.model)[:22], printable(s.modality)
        print(f"{name or '.':<{width}}  {model or '-':<22} {modality or '-':<8} {s.rows:>12,} "
              f"{human_bytes(s.bytes):>10} {s.version:>7}  {printable(s.updated):<20}  {printable(hooks)}")
    print(f"{len(found)} dataset(s) under {printable(root.display())}")
    return 0


def _demo_unit(rng, u: int, cfg: DemoConfig, hooks: dict, directions) -> dict:
    """Activations with a growing norm per layer and a few "concept" directions, like a real residual stream."""
    import numpy as np

    n = cfg.rows_per_unit
    concept = rng.integers(0, 8, n)
    cols = {EXAMPLE_ID: np.arange(u * n, (u + 1) * n) // 64,  # 64 tokens per example
            POSITION: np.tile(np.arange(64, dtype=np.int32), n // 64 + 1)[:n],
            TOKEN_ID: rng.integers(0, 30000, n).astype(np.int32),
            "label": np.array([f"concept-{c}" for c in concept], dtype=object)}
    for i, h in enumerate(hooks):
        cols[h] = ((1 + i) * directions[concept] + rng.standard_normal((n, cfg.dim), dtype=np.float32)).astype(
            np.float16)
    return cols


def _check_demo_out(cfg: DemoConfig) -> None:
    """Refuse, before anything is written, a --out holding a dataset that an earlier ``actlake demo`` did not make
    (a mistyped --out would lose the latest view of a real dataset), unless --overwrite. A folder holding no
    dataset is written into (its files are kept) and an earlier demo dataset is replaced, as before."""
    from shards.errors import ActlakeError, ConfigError, DatasetNotFoundError
    from shards.layout import LOG_DIR
    from shards.manifest import read_manifest

    if cfg.overwrite:
        return
    storage = Storage(cfg.out, cfg.storage)
    try:
        config = read_manifest(storage, lazy=True).config or {}
    except DatasetNotFoundError:
        if not storage.list(LOG_DIR):  # no dataset at all (a dataset whose root was lost still has its log)
            return
        config = {}
    except ActlakeError:  # a dataset that cannot be read is no known demo
        config = {}
    if config.get("command") != "demo":
        raise ConfigError(f"--out {printable(storage.display())} holds a dataset that `actlake demo` did not write: "
                          "the demo never replaces another dataset unless told to. Give --overwrite to replace it, "
                          "or choose another --out (e.g. demo-data/synthetic).")


def cmd_demo(cfg: DemoConfig) -> int:
    import numpy as np
    from tqdm.auto import tqdm

    from shards.writer import create_dataset

    hooks = {f"resid.{i}": {"shape": [cfg.dim], "dtype": "float16"} for i in range(cfg.layers)}
    rng = np.random.default_rng(cfg.seed)
    directions = rng.standard_normal((8, cfg.dim)).astype(np.float32)
    t0 = time.perf_counter()
    _check_demo_out(cfg)
    with create_dataset(cfg.out, hooks, columns={"label": "string"}, mode="overwrite", storage_options=cfg.storage,
                        provenance={"model": {"name": "synthetic"}, "corpus": {"source": "demo", "seed": cfg.seed}},
                        config={"command": "demo", **dataclasses.asdict(cfg)}) as w:
        for u in tqdm(range(cfg.units), desc="writing units", unit="unit"):
            w.write_unit(u, _demo_unit(rng, u, cfg, hooks, directions))
    wrote = time.perf_counter() - t0
    ds = open_dataset(cfg.out, cfg.storage)
    print(describe(ds))
    rc = cmd_verify(VerifyConfig(uri=cfg.out, storage=cfg.storage))
    t0, rows = time.perf_counter(), 0
    for batch in tqdm(ds.iter_batches("resid.0", batch_size=4096, shuffle=True, seed=0), desc="reading (shuffled)",
                      unit="batch"):
        rows += len(batch["resid.0"])
    read = time.perf_counter() - t0
    per_hook = ds.hook_spec("resid.0").row_bytes * rows
    print(f"wrote {human_bytes(ds.manifest.num_bytes)} in {wrote:.2f}s; read one hook shuffled "
          f"({rows:,} rows, {human_bytes(per_hook)}) in {read:.2f}s = {per_hook / read / 1e9:.2f} GB/s")
    return rc
