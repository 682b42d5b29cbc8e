"""``actlake probe``'s configuration; its CLI flags are generated from it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from simple_parsing import field

from analysis.common.args import TASK_NEUTRAL, HookTaskArgs
from analysis.probe.registry import PROBES, get_probe
from shards.columns import EXAMPLE_ID, POSITION, STIMULUS_ID
from shards.config import check_choices, check_positive, parse_count, split_list
from shards.errors import ConfigError

ON_CHOICES = (EXAMPLE_ID, STIMULUS_ID, f"{EXAMPLE_ID},{POSITION}")


@dataclass
class ProbeConfig(HookTaskArgs):
    """Linear probes of a label over every hook of a dataset, cross-validated by group, with control tasks,
    concept depth and steering directions; one Ray task per hook."""

    out: str = "runs/probe"
    """Output URI: probe_results.parquet, summary.json, probe_accuracy.png, directions.safetensors."""

    label: str = "label"
    """The label: a metadata column of the dataset, or a column of the --labels table."""

    labels: str | None = None
    """A table of labels (Parquet, CSV or JSON lines; any URI) joined to the rows on --on."""

    on: str = EXAMPLE_ID
    """Join key of --labels: example_id, stimulus_id, or example_id,position for token-level labels."""

    allow_missing_labels: bool = field(default=False, action="store_true")
    """Probe only the rows the --labels table covers (default: rows without a label are an error)."""

    task: Literal["auto", "classify", "regress"] = "auto"
    """classify or regress; auto: strings, booleans and integers with few values are classified."""

    probe: str = field(default="auto", choices=PROBES.choices("auto"))
    """The probe kind (one file each in analysis/probe/probes/); auto: the first kind that solves the task."""

    folds: int = 5
    """Cross-validation folds (grouped by --group-by, stratified by class where possible)."""

    group_by: str | None = None
    """Rows sharing this column's value never straddle train and test (default: stimulus_id if the dataset
    has it, else example_id)."""

    control: Literal["none", "shuffle", "type"] = "none"
    """Control task (Hewitt & Liang 2019): type gives each token type a fixed random label drawn from the label
    distribution (selective only with far more token types than dims); shuffle gives each group another group's
    label (for a label per example)."""

    reg: list[str] = field(default_factory=lambda: ["auto"], nargs="*", metavar="auto|VALUE[,VALUE...]")
    """L2 penalty in scikit-learn's units (logistic: 1/C, ridge: alpha). Several values, or auto (a grid per
    training item), are chosen per fold by an inner cross-validation on that fold's training folds only."""

    pool: Literal["none", "mean", "last", "first"] = "none"
    """Pool each example's token rows before probing (example-level labels only)."""

    max_rows: int | None = None
    """Probe at most this many items (whole groups, seeded sample)."""

    seed: int = 0
    """Seed of folds, controls and samples."""

    threshold: float = 0.9
    """Concept depth: the first layer whose mean score reaches this fraction of the best layer's."""

    memory_budget: str = "4G"
    """Bytes of one hook's items held in memory for exact full-batch fitting; larger hooks stream
    (logistic: minibatch Adam; ridge stays exact)."""

    reg_search_rows: int = 10000
    """Items of the logistic penalty search (whole groups, seeded; 0: all): the search is 60 fits (5 folds x 3
    inner folds x 4 penalties) against the run's 6-11, so it passes over a sample."""

    max_iter: int = 200
    """L-BFGS iterations at most."""

    tol: float = 1e-4
    """L-BFGS gradient tolerance: largest |gradient| of the per-item objective (scikit-learn's default tol)."""

    epochs: int = 8
    """Streaming minibatch passes (hooks beyond --memory-budget)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.reg = split_list(self.reg)
        check_choices(self)
        if self.probe != "auto":
            get_probe(self.probe)
        check_positive(self, "max_iter", "tol", "epochs")
        if self.folds < 2:
            raise ConfigError(f"--folds must be at least 2, got {self.folds}")
        if self.on not in ON_CHOICES:
            raise ConfigError(f"--on {self.on!r}: use one of {', '.join(ON_CHOICES)}")
        if not 0 < self.threshold <= 1:
            raise ConfigError(f"--threshold must be in (0, 1], got {self.threshold}")
        if self.max_rows is not None and self.max_rows <= 0:
            raise ConfigError(f"--max-rows must be positive, got {self.max_rows}")
        if self.reg != ["auto"]:
            try:
                values = [float(v) for v in self.reg]
            except ValueError:
                raise ConfigError(f"--reg {','.join(map(str, self.reg))}: use auto or positive numbers") from None
            if not values or any(v <= 0 for v in values):
                raise ConfigError(f"--reg values must be positive, got {self.reg}")
            self.reg = [repr(v) for v in values]
        try:
            parse_count(self.memory_budget)
        except ConfigError:
            raise ConfigError(f"--memory-budget {self.memory_budget!r}: use bytes such as 4G, 512M") from None

    @property
    def on_columns(self) -> list[str]:
        return self.on.split(",")

    @property
    def reg_values(self) -> list[float] | None:
        """The penalties given, or None for auto."""
        return None if self.reg == ["auto"] else [float(v) for v in self.reg]

    @property
    def budget_bytes(self) -> int:
        return parse_count(self.memory_budget.rstrip("Bb"))

    def group_column(self, columns: list[str]) -> str:
        """--group-by, or its default for a dataset with these columns."""
        return self.group_by or (STIMULUS_ID if STIMULUS_ID in columns else EXAMPLE_ID)


#: settings that do not change what a run computes: left out of its fingerprint
RUN_NEUTRAL = TASK_NEUTRAL
