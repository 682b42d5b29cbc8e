"""Job files: a command's options as YAML, read through simple_parsing's config-file support
(``--config job.yaml`` or ``--config=job.yaml``; flags given beside it override it).

A job file may list options flat, as the flags are (``endpoint_url: ...``), or nested as the configs
hold them (``storage: {endpoint_url: ...}``); a section named after the command (``extract:``) may hold
them. ``env:NAME`` reads the file's text from an environment variable (how ``actlake submit`` ships it).
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from pathlib import Path

import yaml
from simple_parsing import ArgumentParser

from shards.config import check_nested_keys
from shards.errors import ConfigError
from shards.secrets import redact_message

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
    return read_job_file_text(raw, text)


def read_job_file_text(raw: str, where: str = "job file") -> dict:
    """A job file's options from its YAML text; ConfigError naming ``where`` when it is not a mapping."""
    try:
        data = yaml.safe_load(raw) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"job file {where!r} is not valid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"job file {where!r} holds a {type(data).__name__}; it must hold a mapping of options, "
                          "e.g. 'data: builtin:concepts'")
    return data


def check_config_flag(argv: list[str]) -> None:
    """``--config`` must name a file: simple_parsing would read ``--config`` alone as "no job file"."""
    for i, arg in enumerate(argv):
        if arg == "--config" and (i + 1 == len(argv) or argv[i + 1].startswith("-")):
            raise ConfigError("--config needs a job file: --config job.yaml")
        if arg == "--config=":
            raise ConfigError("--config needs a job file: --config job.yaml")


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


def _default_of(cfg_cls, name: str):
    f = next(f for f in dataclasses.fields(cfg_cls) if f.name == name)
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def normalise(data: dict, cfg_cls, section: str, where: str) -> dict:
    """The job file's options for ``cfg_cls``: its ``section`` if it has one, flat options nested where the
    config nests them; unknown options are refused naming the known ones."""
    if isinstance(data.get(section), dict):
        data = data[section]
    data = {str(k).replace("-", "_"): v for k, v in data.items()}
    storage = data.get("storage")
    if "credentials" in data or (isinstance(storage, dict) and "credentials" in storage):
        raise ConfigError(f"job file {where}: credentials never go in job files (they are shipped and stored with "
                          "jobs and schedules); give them to the machines: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, a "
                          "profile (--profile) or a Kubernetes secret")
    top = {f.name for f in dataclasses.fields(cfg_cls)}
    nested = _nested_fields(cfg_cls)
    out: dict = {}
    data = _pin_versions(data, cfg_cls, where)
    for key, value in data.items():
        if key in top:
            if isinstance(value, dict) and key in nested.values():
                check_nested_keys(value, type(_default_of(cfg_cls, key)))
                out[key] = {**out.get(key, {}), **value}
            else:
                out[key] = value
        elif key in nested:
            out.setdefault(nested[key], {})[key] = value
        else:
            raise ConfigError(f"job file {where}: unknown option {key!r}; known: {sorted(top | set(nested))}")
    return out


def _pin_versions(data: dict, cfg_cls, where: str) -> dict:
    """``data_version: N`` (for any dataset input ``data``) folded into ``data: URI@vN``: the older spelling."""
    from analysis.common.inputs import DatasetInput, input_fields, version_flag

    data = dict(data)
    for name in input_fields(cfg_cls):
        version = data.pop(version_flag(name), None)
        if version is None:
            continue
        given = data.get(name, _default_of(cfg_cls, name))
        try:
            data[name] = str(DatasetInput("" if given is None else given, version))
        except ConfigError as exc:
            raise ConfigError(f"job file {where}: {exc}") from None
    return data


_UNRECOGNIZED = "unrecognized arguments: "  #: argparse's message for words no flag took
_UNKNOWN_FLAG_VALUE = re.compile(r"(?<!\S)(--?[\w.\-]+)=\S+")


class JobFileParser(ArgumentParser):
    """simple_parsing's parser, reading ``--config`` files with ``read_job_file`` and ``normalise``."""

    section: str = ""

    def parse_known_args(self, args=None, namespace=None, *rest, **kwargs):
        if args is not None:
            check_config_flag(list(args))
        self._given = list(sys.argv[1:] if args is None else args)  # what error() masks the secrets of
        return super().parse_known_args(args, namespace, *rest, **kwargs)

    def error(self, message: str):
        """argparse's error, its message cleaned first: it echoes what was typed (``unrecognized arguments: ...``),
        which may be a URI with credentials or a secret (``shards.secrets.redact_message``); an unknown flag's
        ``=VALUE`` is not shown (``--hf-tokn=SECRET``: a mistyped name no longer looks secret)."""
        if message.startswith(_UNRECOGNIZED):
            message = _UNKNOWN_FLAG_VALUE.sub(r"\1=***", message)
        super().error(redact_message(message, getattr(self, "_given", ())))

    def set_defaults(self, config_path=None, **kwargs) -> None:
        if config_path:
            wrapper = self._wrappers[0]
            data = normalise(read_job_file(config_path), wrapper.dataclass, self.section, str(config_path))
            return super().set_defaults(**{wrapper.dest: data})
        return super().set_defaults(**kwargs)
