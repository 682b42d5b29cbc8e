"""Every dataset a command reads is one typed input, ``DatasetInput``: its URI and the version asked for, written
``URI@vN`` wherever a dataset is named (flags, job files, intervention options, Python). The run start
(``analysis.common.runstart``) pins each input to one version when the run is planned and records what it read as
a ``shards.manifest.DatasetRef`` (URI without credentials, dataset id, version) in ``run.json`` and the summary.

A config declares an input as a field typed ``DatasetInput`` (or ``DatasetInput | None``) and converts it in its
``__post_init__`` with ``take_inputs``; the run start finds every such field by itself, and the command line offers
``--NAME-version N`` for each (the older spelling of ``--NAME URI@vN``).
"""

from __future__ import annotations

import dataclasses
import re
import typing
from typing import Any

from shards.errors import ConfigError
from shards.manifest import DatasetRef, check_version
from shards.pins import SYNTAX, split_pin  # noqa: F401 - one spelling of a pin, in the lowest layer
from shards.reader import Dataset, open_dataset


class DatasetInput(str):
    """A dataset a command reads: ``uri`` and the ``version`` asked for (None: the one the run start pins).

    Its value is its text, ``URI`` or ``URI@vN``, so that flags, job files, YAML, JSON, pickles (Ray) and
    ``dataclasses.replace`` carry it unchanged: simple_parsing would split a dataclass field into one flag per
    attribute. An empty ``uri`` stands for the command's default dataset (an SAE's own), at ``version``.
    """

    uri: str
    version: int | None

    def __new__(cls, text: str | dict = "", version: int | None = None) -> DatasetInput:
        if isinstance(text, dict):  # a job file's nested spelling: {uri: ..., version: N}
            unknown = sorted(set(text) - {"uri", "version"})
            if unknown:
                raise ConfigError(f"a dataset input takes uri and version, not {unknown}; or write it {SYNTAX}")
            text, version = str(text.get("uri") or ""), version if version is not None else text.get("version")
        uri, pinned = split_pin(str(text))
        if version is not None:
            version = check_version(version)
            if pinned is not None and pinned != version:
                raise ConfigError(f"{text} asks for version {pinned} and a version flag for {version}: give one")
        version = pinned if version is None else version
        self = super().__new__(cls, uri + (f"@v{version}" if version is not None else ""))
        self.uri, self.version = uri, version
        return self

    def __reduce__(self):
        return DatasetInput, (str(self),)

    def __repr__(self) -> str:
        return f"DatasetInput({str(self)!r})"

    def at(self, version: int | None) -> DatasetInput:
        """The same URI at ``version`` (None: unpinned)."""
        return DatasetInput(self.uri, version)

    def or_default(self, default: DatasetInput | None) -> DatasetInput | None:
        """This input, or ``default``'s URI where it names none (``@vN`` alone keeps its version)."""
        if self.uri or default is None:
            return self
        return default if self.version is None else default.at(self.version)

    def open(self, storage: Any = None, version: int | None = None) -> Dataset:
        """The dataset at ``version`` (default: the one asked for, else the latest)."""
        return open_dataset(self.uri, storage, self.version if version is None else version)


def as_input(value: Any) -> DatasetInput | None:
    """A config value as an input: None and '' are none; text, a ``{uri, version}`` mapping or an input is one."""
    if value is None or (isinstance(value, str) and not isinstance(value, DatasetInput) and not value):
        return None
    return value if isinstance(value, DatasetInput) else DatasetInput(value)


def take_inputs(cfg, *names: str) -> None:
    """Convert ``cfg``'s input fields (``names``; default: every field typed ``DatasetInput``) to ``DatasetInput``
    (None where not given), the credentials in a URI (``s3://KEY:SECRET@...``) moved into ``cfg.storage`` first,
    as ``take_credentials`` does for other URIs: no input a config holds, records or ships carries a secret. A
    config calls it once in ``__post_init__``; a new input field needs nothing more."""
    from shards.secrets import split_credentials

    for name in names or input_fields(type(cfg)):
        given = as_input(getattr(cfg, name))
        if given is not None:
            clean, creds = split_credentials(given.uri)  # the pin is off: '@vN' never reads as a userinfo end
            if creds:
                cfg.storage.credentials = {**cfg.storage.credentials, **creds}
            given = DatasetInput(clean, given.version)
        setattr(cfg, name, given)


def _is_input_type(hint) -> bool:
    if isinstance(hint, str):  # an annotation that could not be resolved (a name imported for type checkers only)
        return bool(re.fullmatch(r"DatasetInput( \| None)?", hint.strip()))
    return hint is DatasetInput or DatasetInput in typing.get_args(hint)


def input_fields(cls) -> list[str]:
    """The fields of a config class that are dataset inputs (typed ``DatasetInput`` or ``DatasetInput | None``)."""
    try:
        hints = typing.get_type_hints(cls)
    except (NameError, TypeError):
        hints = {f.name: f.type for f in dataclasses.fields(cls)}
    return [f.name for f in dataclasses.fields(cls) if _is_input_type(hints.get(f.name))]


def inputs_of(cfg) -> dict[str, DatasetInput]:
    """Every input ``cfg`` names, by field (those left unset are left out)."""
    return {name: value for name in input_fields(type(cfg)) if (value := getattr(cfg, name)) is not None}


def with_versions(cfg, versions: dict[str, int | None]):
    """``cfg`` with its inputs pinned at ``versions`` (by field name; None leaves one as it is): how the
    ``--NAME-version N`` flags apply, and how a driver hands the versions it pinned to its workers."""
    changes = {}
    for name, version in versions.items():
        if version is None:
            continue
        current = getattr(cfg, name)
        current = DatasetInput("") if current is None else current
        changes[name] = DatasetInput(current.uri, version) if current.version in (None, version) else \
            DatasetInput(str(current), version)  # two different versions: refused, naming both
    return dataclasses.replace(cfg, **changes) if changes else cfg


def version_flag(name: str) -> str:
    """The older flag that pins input ``name``: ``data`` -> ``data_version`` (``--data-version``)."""
    return f"{name}_version"


def ref_of(ds: Dataset, hooks=()) -> DatasetRef:
    """What a run records of a dataset it read: where (credentials removed), which dataset, which version."""
    return ds.manifest.ref(ds.storage.display(), hooks)


def dataset_of(summary: dict) -> DatasetRef | None:
    """The dataset a run's summary (JSON) says it read: a ``DatasetRef`` object, or (runs made before) the
    ``dataset``/``dataset_id``/``dataset_version`` fields; None where it names none."""
    got = summary.get("dataset")
    if isinstance(got, dict):
        return DatasetRef.from_json(got)
    if summary.get("dataset_id"):
        return DatasetRef(str(got or ""), summary["dataset_id"], int(summary.get("dataset_version") or 0))
    return None


@dataclasses.dataclass(kw_only=True)
class RunSummary:
    """What every analysis' summary records of its inputs: ``dataset``, the main one (``--data``), and ``inputs``,
    every other by the option that named it (``data2``, ``bands_from[0]``, ``crosscoder_data``), each one
    ``DatasetRef``; the summaries subclass it beside ``JsonRecord``."""

    dataset: DatasetRef
    inputs: dict[str, DatasetRef] = dataclasses.field(default_factory=dict)
    #: a long command's estimate before it started beside its measured time (``CostEstimate.record``)
    cost: dict = dataclasses.field(default_factory=dict, kw_only=True)

    def to_json(self) -> dict:
        out = dataclasses.asdict(self)
        out["dataset"] = self.dataset.to_json()
        out["inputs"] = {k: v.to_json() for k, v in self.inputs.items()}
        return out

    @classmethod
    def from_json(cls, d: dict):
        names = {f.name for f in dataclasses.fields(cls)}
        kept = {k: v for k, v in d.items() if k in names}
        kept["dataset"] = dataset_of(d) or DatasetRef("", "", 0)
        kept["inputs"] = {k: DatasetRef.from_json(v) for k, v in (d.get("inputs") or {}).items()}
        return cls(**kept)
