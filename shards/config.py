"""What every command's config dataclass shares: Literal choices checked, comma lists, positive counts.

Configs check themselves in ``__post_init__``, so a bad value fails where it is given (a flag, a job
file, a Python call), before any Ray or data work starts.
"""

from __future__ import annotations

import dataclasses
import re
import typing

from shards.errors import ConfigError


def split_list(value, kind=str) -> list:
    """A list from a list, a comma-separated string, or a list of comma-separated strings (as flags give them)."""
    if value is None:
        return []
    items = [value] if isinstance(value, (str, int, float)) else list(value)
    out = []
    for item in items:
        parts = [p.strip() for p in item.split(",")] if isinstance(item, str) else [item]
        out += [kind(p) for p in parts if p != ""]
    return out


def did_you_mean(name: str, known, n: int = 2, cutoff: float = 0.4) -> str:
    """`` Did you mean 'x'?`` for the names in ``known`` closest to ``name``, or an empty string."""
    import difflib

    close = difflib.get_close_matches(name, list(known), n=n, cutoff=cutoff)
    return f" Did you mean {', '.join(map(repr, close))}?" if close else ""


def check_choices(cfg) -> None:
    """Every ``Literal`` field of a config dataclass holds one of its choices."""
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        choices = _literal_choices(hints.get(f.name))
        value = getattr(cfg, f.name)
        if choices and value not in choices:
            flag = "--" + f.name.replace("_", "-")
            raise ConfigError(f"{flag} {value!r}: use one of {', '.join(map(str, choices))}")


def _literal_choices(hint) -> tuple:
    if typing.get_origin(hint) is typing.Literal:
        return typing.get_args(hint)
    for arg in typing.get_args(hint):  # Optional[Literal[...]]
        if typing.get_origin(arg) is typing.Literal:
            return typing.get_args(arg) + (None,)
    return ()


def check_positive(cfg, *names: str) -> None:
    for name in names:
        if getattr(cfg, name) <= 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be positive, got {getattr(cfg, name)}")


_CREDENTIAL_KEYS = {"key", "secret", "token", "aws_access_key_id", "aws_secret_access_key", "aws_session_token"}


def nested(value, cls):
    """A nested config from a dict (a job file, ``dataclasses.asdict``) or as given; unknown keys are a
    ConfigError naming them (credentials among them: they never belong in a job file)."""
    if not isinstance(value, dict):
        return value
    check_nested_keys(value, cls)
    return cls(**value)


def check_nested_keys(value: dict, cls) -> None:
    """Unknown keys of a nested config's dict: a ConfigError naming them (credentials: where they belong)."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(value) - known)
    secrets = [k for k in unknown if k.lower() in _CREDENTIAL_KEYS]
    if secrets:
        raise ConfigError(f"{secrets} in a job file: credentials never go in job files (they are shipped and stored "
                          "with jobs and schedules). Give them to the machines instead: AWS_ACCESS_KEY_ID and "
                          "AWS_SECRET_ACCESS_KEY, a profile (--profile), or a Kubernetes secret (docs/operations.md).")
    if unknown:
        raise ConfigError(f"unknown option(s) {unknown} under {cls.__name__}; known: {sorted(known)}")


def take_credentials(cfg, *names: str) -> None:
    """Move ``KEY:SECRET@`` out of the URI fields ``names`` of ``cfg`` into ``cfg.storage`` (a StorageOptions).

    Credentials in a corpus, data or SAE URI then work as they do for ``--out``, and no URI a config holds,
    stores, logs or ships carries a secret (the options are redacted wherever a config is written).
    """
    from shards.secrets import split_credentials

    for name in names:
        value = getattr(cfg, name, None)
        if not isinstance(value, str):
            continue
        clean, creds = split_credentials(value)
        setattr(cfg, name, clean)
        if creds:
            cfg.storage.credentials = {**cfg.storage.credentials, **creds}


def parse_count(value: str | int) -> int:
    """``5M`` -> 5000000, ``200k`` -> 200000, ``1.5B``, or a plain integer."""
    if isinstance(value, int):
        return value
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kKmMbBgG]?)\s*", str(value).replace("_", ""))
    if not m:
        raise ConfigError(f"{value!r} is not a count: use e.g. 5000000, 5M, 200k or 1.5B")
    mult = {"": 1, "k": 10**3, "m": 10**6, "b": 10**9, "g": 10**9}[m.group(2).lower()]
    return int(round(float(m.group(1)) * mult))
