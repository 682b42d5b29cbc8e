"""The data arguments of an analysis (which dataset, which version, which hooks, where it lives), and those of an
analysis that runs one task per hook (how many at once, where, with how many threads)."""

from __future__ import annotations

from dataclasses import dataclass

from simple_parsing import field

from analysis.common.hooks import in_layer_order
from analysis.common.inputs import DatasetInput, take_inputs
from shards.config import check_positive, nested, split_list, take_credentials
from shards.errors import ConfigError
from shards.reader import Dataset
from shards.storage import StorageOptions


@dataclass
class DataArgs:
    """The dataset an analysis reads (``--data URI[@vN]``, ``--hooks``, storage options)."""

    data: DatasetInput = field(default=DatasetInput("demo-data/minilm"), metavar="URI[@vN]")
    """Activation dataset URI (local path, s3://bucket/prefix, any fsspec URI); URI@vN reads version N (`actlake
    versions URI` lists them; default: the latest when the run is planned). The version read is recorded in
    run.json and used by every task, whatever is appended meanwhile."""

    hooks: list[str] = field(default_factory=lambda: ["resid.*"], nargs="*", metavar="HOOK[,HOOK...]")
    """Hooks to analyse: names or globs (resid.*), taken in layer order."""

    storage: StorageOptions = field(default_factory=StorageOptions)
    """Storage options for --data (and the output)."""

    def __post_init__(self) -> None:
        self.hooks = split_list(self.hooks)
        self.storage = nested(self.storage, StorageOptions)
        take_credentials(self, "out")
        take_inputs(self)  # --data, and a subclass' own inputs (--data2)
        if self.data is None or not self.data.uri:
            raise ConfigError("--data: name the activation dataset (URI, or URI@vN for version N)")
        if not self.hooks:
            raise ConfigError("--hooks: name at least one hook, e.g. --hooks 'resid.*'")

    def resolve_hooks(self, ds: Dataset) -> list[str]:
        """The hooks asked for (globs expanded) in layer order; unknown names fail here."""
        return in_layer_order(ds.schema.resolve_hooks(self.hooks, ds.storage.display()))


@dataclass
class HookTaskArgs(DataArgs):
    """An analysis that runs one task per hook (in this process or as Ray tasks) into a resumable output."""

    workers: int = 1
    """Hooks processed at once, each a Ray task (1: in this process)."""

    address: str | None = None
    """Ray address for --workers > 1 (default: a local Ray)."""

    threads: int = 0
    """Torch threads per hook (0: the cores divided among the workers)."""

    overwrite: bool = field(default=False, action="store_true")
    """Replace a different run at --out instead of refusing."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "workers")


#: HookTaskArgs' settings (and --out) that do not change what a run computes: out of its fingerprint (an input's
#: version asked for is replaced there by the version read: ``run_settings``).
#: run_plots: whether a sweep's run draws its own pages (analysis/align/config.py), not what it computes
TASK_NEUTRAL = frozenset({"out", "overwrite", "workers", "address", "threads", "storage", "run_plots"})
