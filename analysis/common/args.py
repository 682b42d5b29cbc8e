"""The data arguments of an analysis: which dataset, which hooks, where it lives."""

from __future__ import annotations

from dataclasses import dataclass

from simple_parsing import field

from analysis.common.hooks import in_layer_order
from shards.config import nested, split_list, take_credentials
from shards.errors import ConfigError
from shards.reader import Dataset, open_dataset
from shards.storage import StorageOptions


@dataclass
class DataArgs:
    """The dataset an analysis reads (``--data``, ``--hooks``, storage options)."""

    data: str = "demo-data/minilm"
    """Activation dataset URI (local path, s3://bucket/prefix, any fsspec URI)."""

    hooks: list[str] = field(default_factory=lambda: ["resid.*"], nargs="*", metavar="HOOK[,HOOK...]")
    """Hooks to analyse: names or globs (resid.*), taken in layer order."""

    storage: StorageOptions = field(default_factory=StorageOptions)
    """Storage options for --data (and the output)."""

    def __post_init__(self) -> None:
        self.hooks = split_list(self.hooks)
        self.storage = nested(self.storage, StorageOptions)
        take_credentials(self, "data", "out")
        if not self.hooks:
            raise ConfigError("--hooks: name at least one hook, e.g. --hooks 'resid.*'")

    def open(self) -> tuple[Dataset, list[str]]:
        """The dataset, and the hooks asked for (globs expanded) in layer order; unknown names fail here."""
        ds = open_dataset(self.data, self.storage)
        return ds, in_layer_order(ds.schema.resolve_hooks(self.hooks, ds.storage.display()))
