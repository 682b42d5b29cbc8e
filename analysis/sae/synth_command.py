"""``actlake sae synth``: a synthetic activation dataset with known features (``analysis.sae.synthetic``), its
generator config and true feature directions stored with it (``artifacts/synthetic_truth.safetensors``), so that
``sae train`` trains on it like any dataset and ``sae evaluate --suite synthetic`` scores the result."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
from simple_parsing import field

from analysis.sae.synthetic import CHUNK, TRUTH_ARTIFACT, SyntheticConfig, SyntheticData, truth_bytes
from shards.columns import EXAMPLE_ID, POSITION
from shards.config import nested, parse_count, take_credentials
from shards.errors import ConfigError
from shards.records import JsonRecord
from shards.storage import StorageOptions

HOOK = "x"


@dataclass
class SaeSynthConfig:
    """Write a synthetic activation dataset with known features."""

    out: str = "runs/synthetic"
    """Dataset URI to create."""

    rows: str = "1M"
    """Rows to generate (1M, 200k, ...)."""

    generator: SyntheticConfig = field(default_factory=SyntheticConfig)
    """The generator: dimensions, features, firing, hierarchy, correlation, noise."""

    examples_per_unit: int = 4
    """Chunks of 16,384 rows per committed unit."""

    overwrite: bool = field(default=False, action="store_true")
    """Replace a dataset already at --out."""

    storage: StorageOptions = field(default_factory=StorageOptions)
    """Storage options for --out."""

    def __post_init__(self) -> None:
        self.storage = nested(self.storage, StorageOptions)
        self.generator = nested(self.generator, SyntheticConfig)
        take_credentials(self, "out")
        try:
            if parse_count(self.rows) <= 0:
                raise ConfigError("must be positive")
        except ConfigError as exc:
            raise ConfigError(f"--rows: {exc}") from None


@dataclass(kw_only=True)
class SynthSummary(JsonRecord):
    out: str
    rows: int
    d: int
    n_features: int
    mean_l0: float


def run(cfg: SaeSynthConfig) -> SynthSummary:
    """Generate and commit the rows unit by unit (one example per row: each row is its own example)."""
    import shards

    n = parse_count(cfg.rows)
    data = SyntheticData(cfg.generator)
    per_unit = CHUNK * cfg.examples_per_unit
    active = 0
    with shards.create_dataset(cfg.out, {HOOK: {"shape": [cfg.generator.d], "dtype": "float32"}},
                               mode="overwrite" if cfg.overwrite else "create",
                               storage_options=cfg.storage,
                               provenance={"synthetic": {"command": "actlake sae synth",
                                                         "generator": dataclasses.asdict(cfg.generator)}}) as w:
        w.put_artifact(TRUTH_ARTIFACT, truth_bytes(data), kind="synthetic-truth")
        for u, start in enumerate(range(0, n, per_unit)):
            x, acts = data.rows(start, min(start + per_unit, n))
            active += int((acts > 0).sum())
            ids = np.arange(start, start + len(x), dtype=np.int64)
            w.write_unit(u, {EXAMPLE_ID: ids, POSITION: np.full(len(x), -1, np.int32), HOOK: x})
    return SynthSummary(out=cfg.out, rows=n, d=cfg.generator.d, n_features=cfg.generator.n_features,
                        mean_l0=active / n)


CONFIG = SaeSynthConfig
