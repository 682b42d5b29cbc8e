"""Configs of the ``actlake`` subcommands, one dataclass each; the CLI is generated from them.

Each field's docstring (the string under it) becomes its ``--help`` text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from simple_parsing import field

from shards.config import check_positive, nested, take_credentials
from shards.errors import ConfigError
from shards.storage import StorageOptions


@dataclass(kw_only=True)  # keyword-only: the positional fields of the configs below come first
class _WithStorage:
    storage: StorageOptions = field(default_factory=StorageOptions)
    """Storage options (endpoint, region, profile, ...)."""

    def __post_init__(self) -> None:
        self.storage = nested(self.storage, StorageOptions)
        for name in ("uri", "prefix"):  # Storage("") is the file system's root: `info ''` said "no dataset at /"
            value = getattr(self, name, None)
            if isinstance(value, str) and not value.strip():
                raise ConfigError(f"{name.upper()} is empty: give a path, file://PATH or s3://bucket/prefix")
        take_credentials(self, "uri", "prefix", "out")


@dataclass
class InfoConfig(_WithStorage):
    """Describe a dataset: hooks, rows, units, dtypes, bytes, provenance, statistics."""

    uri: str = field(positional=True, metavar="URI")
    """Dataset URI: a local path, file://, s3://bucket/prefix or any fsspec URI."""

    json: bool = field(default=False, action="store_true")
    """Print the whole manifest as JSON."""

    data_version: int | None = field(default=None, alias=["--version"])
    """Describe the dataset as it was at this version (`actlake versions URI` lists them; default: the latest);
    URI@vN says the same."""

    def __post_init__(self) -> None:
        from analysis.common.inputs import split_pin
        from shards.secrets import redact_uri

        uri, pinned = split_pin(self.uri)  # before the credentials: '@vN' never reads as the end of KEY:SECRET@
        if pinned is not None:
            if self.data_version is not None and self.data_version != pinned:
                raise ConfigError(f"{redact_uri(uri)}@v{pinned} and --version {self.data_version} name two versions: "
                                  "give one")
            self.uri, self.data_version = uri, pinned
        super().__post_init__()


@dataclass
class VerifyConfig(_WithStorage):
    """Check every committed file, commit record and stats file against the manifest, and every kept version
    against its record and the chain; --repair fixes what it can."""

    uri: str = field(positional=True, metavar="URI")
    """Dataset URI."""

    repair: bool = field(default=False, action="store_true")
    """Under the write lock: rebuild a missing or damaged manifest (also one its version log disagrees with) and
    damaged statistics from the commit records; set aside damaged version records (log entries, checkpoints,
    leaves; `….damaged`, bytes kept) and write a checkpoint version that needs none of them; delete garbage
    (unit files no commit record names, temporary files of killed writers, checkpoints and leaves no version
    names)."""

    break_lock: bool = field(default=False, action="store_true")
    """With --repair: take the write lock even if another writer seems to hold it (see `actlake unlock`)."""

    drop_damaged: bool = field(default=False, action="store_true")
    """With --repair: uncommit missing or damaged units, so that rerunning the job writes them again."""

    no_checksums: bool = field(default=False, action="store_true")
    """Skip reading whole files for checksums (sizes, footers and schemas are still checked)."""

    since: int | None = field(default=None, metavar="VERSION")
    """Check only the versions after VERSION (one an earlier verify passed): their log chain back to it, the unit
    files they added, the latest's statistics and the root. Cost: what changed since, not the dataset's size."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if (self.break_lock or self.drop_damaged) and not self.repair:
            raise ConfigError("--break-lock and --drop-damaged only act with --repair")
        if self.since is not None and self.since < 0:
            raise ConfigError(f"--since {self.since}: give a version >= 0 (`actlake versions URI` lists them)")
        if self.since is not None and self.repair:
            raise ConfigError("--since only checks; `actlake verify --repair URI` (without --since) repairs the "
                              "whole dataset")


@dataclass
class VersionsConfig(_WithStorage):
    """List a dataset's kept versions: time, rows, units and the job or tick that made each."""

    uri: str = field(positional=True, metavar="URI")
    """Dataset URI."""

    json: bool = field(default=False, action="store_true")
    """Print one JSON object per version."""


@dataclass
class VacuumConfig(_WithStorage):
    """Remove old versions and the files only they name (under the write lock)."""

    uri: str = field(positional=True, metavar="URI")
    """Dataset URI."""

    keep: int = 10
    """How many of the newest versions to keep readable (at least 1: the latest)."""

    dry_run: bool = field(default=False, action="store_true")
    """Only say what would be removed."""

    full: bool = field(default=False, action="store_true")
    """List every file of the dataset and remove whatever no kept version names (garbage of killed writers
    included). Without it, what the dropped versions superseded is read from their log entries: the cost is what
    is removed, not the dataset's size."""

    break_lock: bool = field(default=False, action="store_true")
    """Take the write lock even if another writer seems to hold it (see `actlake unlock`)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "keep")


@dataclass
class UnlockConfig(_WithStorage):
    """Remove a dataset's write lock (after a writer died on another host, or the lock file is damaged)."""

    uri: str = field(positional=True, metavar="URI")
    """Dataset URI."""


@dataclass
class LsConfig(_WithStorage):
    """List the datasets under a prefix."""

    prefix: str = field(positional=True, metavar="PREFIX")
    """A local directory or URI prefix, e.g. s3://bucket/acts."""

    depth: int = 4
    """How many directory levels below the prefix to search."""

    json: bool = False
    """One JSON object per dataset (uri, dataset_id, model, modality, hooks, rows, units, bytes, version, updated,
    problem) instead of the table."""

    threads: int = 16
    """Folders listed and manifests read at once (an object store answers each in tens of milliseconds)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        # ConfigError (not ValueError): the command line prints it as one line, where a ValueError was a traceback
        if self.depth < 0:
            raise ConfigError(f"--depth {self.depth}: give 0 (only PREFIX itself) or more levels below PREFIX, "
                              "e.g. --depth 4 (the default)")
        if self.threads < 1:
            raise ConfigError(f"--threads {self.threads}: give 1 or more folders listed at once, e.g. --threads 16 "
                              "(the default)")


@dataclass
class DemoConfig(_WithStorage):
    """Write a dataset of synthetic activations, then describe, verify and read it back."""

    out: str = "demo-data/synthetic"
    """Where to write the demo dataset (a demo dataset already there is replaced; any other only with
    --overwrite)."""

    units: int = 16
    """Number of work units (one Parquet file each)."""

    rows_per_unit: int = 4096
    """Rows (tokens) per unit."""

    dim: int = 384
    """Width of each hook (MiniLM's hidden size)."""

    layers: int = 4
    """Number of hooks, named resid.0 … resid.N-1."""

    seed: int = 0
    """Seed of the synthetic activations."""

    overwrite: bool = field(default=False, action="store_true")
    """Replace a dataset at --out that is not an earlier demo dataset."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "units", "rows_per_unit", "dim", "layers")


@dataclass
class SubmitConfig:
    """Submit a job file (the options of actlake extract, sae train or sae encode as YAML) to a Ray cluster."""

    job_file: str = field(positional=True, metavar="JOB.yaml")
    """The job file: the options of the command (see --command) as YAML."""

    address: str | None = None
    """The cluster's job server, e.g. http://HEAD:8265 (default: RAY_ADDRESS or http://127.0.0.1:8265)."""

    command: str = "extract"
    """The actlake command the job runs: extract, import, or an analysis ("sae train", "sae encode")."""

    wait: bool = field(default=False, action="store_true")
    """Wait for the job to finish and print its logs."""


@dataclass
class JobsConfig:
    """Status, logs or stop of a submitted job."""

    action: Literal["status", "logs", "stop"] = field(positional=True)
    """What to do."""

    job_id: str = field(positional=True, metavar="ID")
    """The id printed by `actlake submit`."""

    address: str | None = None
    """The cluster's job server (default: RAY_ADDRESS or http://127.0.0.1:8265)."""
