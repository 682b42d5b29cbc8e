"""The ``actlake`` command line: ``actlake info|verify|ls|demo``."""

from __future__ import annotations

import json
import logging
import os
import sys
import time

from simple_parsing import ArgumentParser, DashVariant

from cluster.commands import DemoConfig, InfoConfig, JobsConfig, LsConfig, StorageArgs, SubmitConfig, VerifyConfig


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return str(n)


def describe(ds) -> str:
    """The text ``actlake info`` prints."""
    m = ds.manifest
    lines = [
        f"dataset   {ds.storage.display()}",
        f"id        {m['dataset_id']}  (format v{m['format_version']}, actlake {m.get('code_version')})",
        f"created   {m.get('created')}   updated {m.get('updated')}",
        f"rows      {ds.num_rows:,}   units {len(ds.units)}   bytes {_human_bytes(m.get('num_bytes', 0))}"
        f"   compression {m.get('compression')}",
        "hooks:",
    ]
    for name, spec in ds.schema.hooks.items():
        s = m.get("stats", {}).get(name)
        stat = (f"  mean‖x‖ {s['mean_norm']:.4g}  max|x| {s['max_abs']:.4g}  mean var {s['mean_variance']:.4g}"
                if s else "")
        lines.append(f"  {name:<24} {str(list(spec.shape)):<14} {spec.dtype:<9} {spec.encoding:<7}{stat}")
    meta = [c for c in ds.columns]
    lines.append(f"columns   {', '.join(meta)}")
    for key, val in m.get("provenance", {}).items():
        lines.append(f"{key:<9} {json.dumps(val, sort_keys=True)[:200]}")
    return "\n".join(lines)


def cmd_info(cfg: InfoConfig, st: StorageArgs) -> int:
    import shards

    ds = shards.open_dataset(cfg.uri, st.options())
    print(json.dumps(ds.manifest, indent=1) if cfg.json else describe(ds))
    return 0


def cmd_verify(cfg: VerifyConfig, st: StorageArgs) -> int:
    from shards.verify import verify_dataset

    report = verify_dataset(cfg.uri, st.options(), checksums=not cfg.no_checksums, repair=cfg.repair)
    for line in report.lines():
        print(line)
    status = "OK" if report.ok else f"FAILED: {len(report.bad)} bad unit(s)"
    print(f"{report.uri}: {report.units_checked} units checked, {status}")
    return 0 if report.ok else 1


def cmd_ls(cfg: LsConfig, st: StorageArgs) -> int:
    import shards
    from shards.storage import Storage

    root = Storage(cfg.prefix, st.options())
    found = root.walk_dirs("", maxdepth=cfg.depth)
    if not found:
        print(f"no datasets under {root.display()}")
        return 0
    for rel in found:
        uri = f"{cfg.prefix.rstrip('/')}/{rel}" if rel else cfg.prefix
        try:
            ds = shards.open_dataset(uri, st.options())
            print(f"{root.display(rel):<60} rows {ds.num_rows:>12,}  units {len(ds.units):>6}  "
                  f"{_human_bytes(ds.manifest.get('num_bytes', 0)):>10}  hooks {','.join(ds.hooks)}")
        except Exception as exc:  # noqa: BLE001 - list what can be listed
            print(f"{root.display(rel):<60} unreadable: {exc}")
    return 0


def cmd_demo(cfg: DemoConfig, st: StorageArgs) -> int:
    import numpy as np
    from tqdm.auto import tqdm

    import shards

    hooks = {f"resid.{i}": {"shape": [cfg.dim], "dtype": "float16"} for i in range(cfg.layers)}
    rng = np.random.default_rng(cfg.seed)
    # Activations with a growing norm per layer and a few "concept" directions, like a real residual stream.
    directions = rng.standard_normal((8, cfg.dim)).astype(np.float32)
    t0 = time.perf_counter()
    with shards.create_dataset(cfg.out, hooks, columns={"label": "string"}, mode="overwrite",
                               storage_options=st.options(),
                               provenance={"model": {"name": "synthetic"},
                                           "corpus": {"source": "demo", "seed": cfg.seed}},
                               config={"command": "demo", **vars(cfg)}) as w:
        for u in tqdm(range(cfg.units), desc="writing units", unit="unit"):
            n = cfg.rows_per_unit
            concept = rng.integers(0, 8, n)
            cols = {"example_id": np.repeat(np.arange(u * n // 64, (u + 1) * n // 64), 64)[:n],
                    "position": np.tile(np.arange(64, dtype=np.int32), n // 64 + 1)[:n],
                    "token_id": rng.integers(0, 30000, n).astype(np.int32),
                    "label": np.array([f"concept-{c}" for c in concept], dtype=object)}
            base = directions[concept]
            for i, h in enumerate(hooks):
                x = (1 + i) * base + rng.standard_normal((n, cfg.dim), dtype=np.float32)
                cols[h] = x.astype(np.float16)
            w.write_unit(u, cols)
    wrote = time.perf_counter() - t0
    ds = shards.open_dataset(cfg.out, st.options())
    print(describe(ds))
    rc = cmd_verify(VerifyConfig(cfg.out), st)
    t0 = time.perf_counter()
    rows = 0
    for batch in tqdm(ds.iter_batches("resid.0", batch_size=4096, shuffle=True, seed=0), desc="reading (shuffled)",
                      unit="batch"):
        rows += len(batch["resid.0"])
    read = time.perf_counter() - t0
    per_hook = ds.hook_spec("resid.0").row_bytes * rows
    print(f"wrote {_human_bytes(ds.manifest['num_bytes'])} in {wrote:.2f}s; read one hook shuffled "
          f"({rows:,} rows, {_human_bytes(per_hook)}) in {read:.2f}s = {per_hook / read / 1e9:.2f} GB/s")
    return rc


def cmd_extract(cfg, _st: None) -> int:
    from ingest.driver import run_extraction

    summary = run_extraction(cfg)
    print(json.dumps(summary))
    return 0


def cmd_submit(cfg: SubmitConfig, _st) -> int:
    from cluster import jobs

    address = cfg.address or jobs.default_address()
    job_id = jobs.submit(cfg.job_file, address, cfg.command)
    print(job_id)
    if cfg.wait:
        state = jobs.wait_for(address, job_id)
        print(jobs.logs(address, job_id))
        print(f"job {job_id}: {state}")
        return 0 if state == "SUCCEEDED" else 1
    return 0


def cmd_jobs(cfg: JobsConfig, _st) -> int:
    from cluster import jobs

    address = cfg.address or jobs.default_address()
    if cfg.action == "status":
        print(jobs.status(address, cfg.job_id))
    elif cfg.action == "logs":
        print(jobs.logs(address, cfg.job_id))
    elif cfg.action == "stop":
        print("stopped" if jobs.stop(address, cfg.job_id) else "not running")
    else:
        print(f"actlake jobs: unknown action {cfg.action!r}; use status, logs or stop", file=sys.stderr)
        return 2
    return 0


def cmd_import(cfg, _st) -> int:
    from ingest.imports import import_features

    print(json.dumps(import_features(cfg)))
    return 0


def _import_config_cls():
    from ingest.imports import ImportConfig

    return ImportConfig


def cmd_sae_train(cfg, _st) -> int:
    from analysis.sae.train import train_sae

    print(json.dumps(train_sae(cfg)))
    return 0


def cmd_sae_encode(cfg, _st) -> int:
    from analysis.sae.encode import encode_dataset

    print(json.dumps(encode_dataset(cfg)))
    return 0


def _sae_train_cls():
    from analysis.sae.config import SaeTrainConfig

    return SaeTrainConfig


def _sae_encode_cls():
    from analysis.sae.config import SaeEncodeConfig

    return SaeEncodeConfig


def _extract_config_cls():
    from ingest.config import ExtractConfig

    return ExtractConfig


COMMANDS = {
    "info": (InfoConfig, cmd_info),
    "verify": (VerifyConfig, cmd_verify),
    "ls": (LsConfig, cmd_ls),
    "demo": (DemoConfig, cmd_demo),
    "extract": (_extract_config_cls, cmd_extract),
    "import": (_import_config_cls, cmd_import),
    "sae train": (_sae_train_cls, cmd_sae_train),
    "sae encode": (_sae_encode_cls, cmd_sae_encode),
    "submit": (SubmitConfig, cmd_submit),
    "jobs": (JobsConfig, cmd_jobs),
}


_JOB_FILE_COMMANDS = ("extract", "sae train", "sae encode")
_GROUP_HELP = {"sae": "Sparse autoencoders: train on a dataset's hooks, encode a dataset with a trained SAE."}


def _load_job_file(path: str, cfg_cls, command: str = "extract"):
    """A job file (YAML) as a config instance; its values become defaults that flags override."""
    import dataclasses

    import yaml

    if path.startswith("env:"):  # a submitted job: the file's text travels in the environment
        data = yaml.safe_load(os.environ.get(path[4:], "")) or {}
    else:
        with open(path) as f:
            data = yaml.safe_load(f) or {}
    section = command.split()[-1]
    if section in data and isinstance(data[section], dict):
        data = data[section]
    data = {k.replace("-", "_"): v for k, v in data.items()}
    known = {f.name for f in dataclasses.fields(cfg_cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise SystemExit(f"actlake: job file {path}: unknown keys {unknown}; known: {sorted(known)}")
    return cfg_cls(**data)


def _resolve(cfg_cls):
    return cfg_cls if isinstance(cfg_cls, type) else cfg_cls()


def build_parser(defaults: dict | None = None) -> ArgumentParser:
    parser = ArgumentParser(prog="actlake", description="Activation datasets: extract, describe, verify, list, "
                            "train SAEs.", add_option_string_dash_variants=DashVariant.DASH)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    groups: dict = {}
    for name, (cfg_cls, _fn) in COMMANDS.items():
        cfg_cls = _resolve(cfg_cls)
        doc = (cfg_cls.__doc__ or "").strip().splitlines()[0]
        if " " in name:  # "sae train": a sub-command of "sae"
            group, leaf = name.split(" ", 1)
            if group not in groups:
                gp = sub.add_parser(group, help=_GROUP_HELP.get(group, f"{group} commands"),
                                    add_option_string_dash_variants=DashVariant.DASH)
                groups[group] = gp.add_subparsers(dest="subcommand", required=True, metavar="SUBCOMMAND")
            p = groups[group].add_parser(leaf, help=doc, description=cfg_cls.__doc__,
                                         add_option_string_dash_variants=DashVariant.DASH)
        else:
            p = sub.add_parser(name, help=doc, description=cfg_cls.__doc__,
                               add_option_string_dash_variants=DashVariant.DASH)
        if name in _JOB_FILE_COMMANDS:
            p.add_argument("--config", default=None, metavar="JOB.yaml",
                           help="job file (YAML) with any of the options below; flags override it")
        p.add_arguments(cfg_cls, dest="cfg", default=(defaults or {}).get(name))
        if name in ("info", "verify", "ls", "demo"):  # the others have their own --endpoint-url
            p.add_arguments(StorageArgs, dest="storage")
    return parser


def _command_of(argv: list[str]) -> str | None:
    words = [a for a in argv if not a.startswith("-")]
    if len(words) >= 2 and f"{words[0]} {words[1]}" in COMMANDS:
        return f"{words[0]} {words[1]}"
    return words[0] if words and words[0] in COMMANDS else None


def main(argv: list[str] | None = None) -> int:
    from shards.errors import ActlakeError

    argv = list(sys.argv[1:] if argv is None else argv)
    defaults = {}
    command = _command_of(argv)
    if command in _JOB_FILE_COMMANDS and "--config" in argv:
        path = argv[argv.index("--config") + 1]
        defaults[command] = _load_job_file(path, _resolve(COMMANDS[command][0]), command)
    args = build_parser(defaults).parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Only our loggers go to DEBUG: botocore's DEBUG output carries request signatures and tokens.
    logging.getLogger("actlake").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    for noisy in ("botocore", "aiobotocore", "s3fs", "urllib3", "fsspec"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    name = f"{args.command} {args.subcommand}" if getattr(args, "subcommand", None) else args.command
    _cfg_cls, fn = COMMANDS[name]
    try:
        return fn(args.cfg, getattr(args, "storage", None))
    except ActlakeError as exc:
        print(f"actlake {name}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
