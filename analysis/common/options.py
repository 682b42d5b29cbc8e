"""Options that belong to one registered method (an SAE architecture, an RDM method, a transform, a metric).

Each method declares its options as a dataclass beside its code; a command's config holds the union of its
methods' options (``merged_options``: one flag per field, whichever method it belongs to), and the chosen
method takes its own by name (``options_of``). A flag of a method that was not chosen is refused
(``refuse_foreign_options``) instead of being silently ignored.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping

from shards.errors import ConfigError


def merged_options(name: str, classes: Iterable[type | None], doc: str, module: str) -> type:
    """One dataclass holding every field of ``classes`` (each once; same-named fields of two classes come from a
    shared base class), whose ``check()`` runs none of theirs: the chosen method checks its own. ``module``: where
    it is bound to ``name`` (so that it pickles by reference)."""
    bases = tuple(dict.fromkeys(c for c in classes if c is not None))
    return dataclasses.dataclass(type(name, bases, {"__doc__": doc, "__module__": module}))


def options_of(cls: type | None, values) -> object | None:
    """An instance of ``cls`` with its fields taken by name from ``values`` (a config or merged options), checked
    by its ``check()`` when it has one; None for a method without options."""
    if cls is None:
        return None
    opts = cls(**{f.name: getattr(values, f.name) for f in dataclasses.fields(cls)})
    check = getattr(opts, "check", None)
    if check is not None:
        check()
    return opts


def _defaults(cls: type) -> dict[str, object]:
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


def refuse_foreign_options(options: Mapping[str, type | None], chosen: list[str], values, flag: str) -> None:
    """A ConfigError for a field of another method's options set away from its default (``--runs`` with
    ``--rdm euclidean``): ``options`` maps each method name to its options class (or None)."""
    own = {f.name for c in chosen if options.get(c) for f in dataclasses.fields(options[c])}
    owners: dict[str, list[str]] = {}
    for name, cls in options.items():
        if cls is None:
            continue
        for field_name, default in _defaults(cls).items():
            if field_name not in own and getattr(values, field_name, default) != default:
                owners.setdefault(field_name, []).append(name)
    for field_name, methods in owners.items():
        raise ConfigError(f"--{field_name.replace('_', '-')} is for {flag} {' or '.join(methods)}, not "
                          f"{flag} {', '.join(chosen)}")
