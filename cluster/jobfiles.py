"""Job files: a command's options as YAML, read through simple_parsing's config-file support
(``--config job.yaml`` or ``--config=job.yaml``; flags given beside it override it).

A job file may list options flat, as the flags are (``endpoint_url: ...``), or nested as the configs
hold them (``storage: {endpoint_url: ...}``); a section named after the command (``extract:``) may hold
them. ``env:NAME`` reads the file's text from an environment variable (how ``actlake submit`` ships it).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import yaml
from simple_parsing import ArgumentParser

from shards.errors import ConfigError

ENV_PREFIX = "env:"


def read_job_file(path: str | Path) -> dict:
    text = str(path)
    if text.startswith(ENV_PREFIX):
        raw = os.environ.get(text[len(ENV_PREFIX):], "")
    else:
        try:
            raw = Path(text).read_text()
        except OSError as exc:
            raise ConfigError(f"job file {text!r} cannot be read: {exc.strerror or exc}") from None
    data = yaml.safe_load(raw) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"job file {text!r} must hold a mapping of options, e.g. 'data: builtin:concepts'")
    return data


def _nested_fields(cfg_cls) -> dict[str, str]:
    """Option name -> the nested config field holding it (``endpoint_url`` -> ``storage``)."""
    out: dict[str, str] = {}
    hints = {f.name: f.default_factory for f in dataclasses.fields(cfg_cls)
             if f.default_factory is not dataclasses.MISSING}
    for name, factory in hints.items():
        value = factory()
        if dataclasses.is_dataclass(value):
            out.update({f.name: name for f in dataclasses.fields(value)})
    return out


def normalise(data: dict, cfg_cls, section: str, where: str) -> dict:
    """The job file's options for ``cfg_cls``: its ``section`` if it has one, flat options nested where the
    config nests them; unknown options are refused naming the known ones."""
    if isinstance(data.get(section), dict):
        data = data[section]
    data = {str(k).replace("-", "_"): v for k, v in data.items()}
    top = {f.name for f in dataclasses.fields(cfg_cls)}
    nested = _nested_fields(cfg_cls)
    out: dict = {}
    for key, value in data.items():
        if key in top:
            out[key] = {**out.get(key, {}), **value} if isinstance(value, dict) and key in nested.values() else value
        elif key in nested:
            out.setdefault(nested[key], {})[key] = value
        else:
            raise ConfigError(f"job file {where}: unknown option {key!r}; known: {sorted(top | set(nested))}")
    return out


class JobFileParser(ArgumentParser):
    """simple_parsing's parser, reading ``--config`` files with ``read_job_file`` and ``normalise``."""

    section: str = ""

    def set_defaults(self, config_path=None, **kwargs) -> None:
        if config_path:
            wrapper = self._wrappers[0]
            data = normalise(read_job_file(config_path), wrapper.dataclass, self.section, str(config_path))
            return super().set_defaults(**{wrapper.dest: data})
        return super().set_defaults(**kwargs)
