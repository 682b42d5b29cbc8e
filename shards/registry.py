"""The one registry type: named variants (alignment metrics, SAE architectures, probe kinds, statistic families,
SAE evaluations, intervention kinds, ...), each declared in its own file with everything that belongs to it (its
options, its null, its order, what it needs to run) and registered by name, as SAELens' ``registry.py`` does.

It lives in ``shards`` because every package may import ``shards``. What it guarantees, once:

- **a name is registered once.** Registering a name (or an alias) a second time raises
  :class:`DuplicateNameError` naming both places (file:line), at import of the second module: two files that
  claim one name would otherwise silently replace each other, and which one won would depend on import order.
  The same place registering again is a re-import (``importlib.reload``), not a second variant: it replaces.
- **one order.** Entries that carry an ``order`` (a number: smaller first) are listed in that order, the rest
  in the order they registered; the CLI's choices, ``--help`` and the runs all read it from here.
- **one error for an unknown name**, in the registry's own error class, with the closest names.
- **choices read late.** :meth:`Registry.choices` is what a config field's ``choices=`` holds: the names as
  they are when argparse asks (after every variant's file has registered itself), not when the config class
  was defined, so a variant registered by a file imported later is a choice too.

Example::

    METRICS: Registry[AlignmentMetric] = Registry("alignment metric")
    METRICS.register(AlignmentMetric("cka", ...))   # in metrics/cka.py
    METRICS.lookup("ckaa")  # ConfigError: unknown alignment metric 'ckaa'. Did you mean 'cka'? Known: cka, ...
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, MutableMapping, Sequence
from pathlib import Path
from typing import Generic, Protocol, TypeVar

from shards.config import did_you_mean
from shards.errors import ActlakeError, ConfigError

_HERE = str(Path(__file__).resolve())
_ROOT = Path(__file__).resolve().parents[1]  #: places under it are shown relative to it


class DuplicateNameError(ActlakeError, ValueError):
    """Two variants registered under one name (or alias)."""


class Named(Protocol):
    name: str


T = TypeVar("T", bound=Named)


def _caller_place() -> str:
    """``file:line`` of the first frame outside this module: the ``register`` call that is being made."""
    frame = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename == _HERE:
        frame = frame.f_back
    if frame is None:  # pragma: no cover - there is always a caller
        return "?"
    path = Path(frame.f_code.co_filename)
    try:
        shown = str(path.resolve().relative_to(_ROOT))
    except ValueError:
        shown = str(path)
    return f"{shown}:{frame.f_lineno}"


class Choices(Sequence[str]):
    """A registry's names (after ``extra`` ones such as ``auto``), read when they are asked for. ``in`` also
    accepts a comma list (``"cka,angular"``), as list flags take them, and aliases (``--arch standard``)."""

    def __init__(self, registry: Registry, extra: tuple[str, ...], where: Callable[[object], bool] | None) -> None:
        self.registry, self.extra, self.where = registry, extra, where

    def _names(self) -> list[str]:
        return [*self.extra, *self.registry.names(self.where)]

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())

    def __getitem__(self, i):
        return self._names()[i]

    def __contains__(self, value: object) -> bool:
        parts = [p.strip() for p in value.split(",")] if isinstance(value, str) else [value]
        return all(p in self.extra or self.registry.knows(p, self.where) for p in parts if p != "")

    def __repr__(self) -> str:
        return repr(tuple(self._names()))


class Registry(MutableMapping[str, T], Generic[T]):
    """Named entries (each with a ``name``, optionally ``aliases`` and an ``order``), in their order.

    ``what`` names an entry in messages (``"alignment metric"``); ``error`` is the class raised for an unknown
    name; ``casefold``: names are looked up case-insensitively (SAE architectures: ``--arch TopK``). It is a
    mapping of name to entry; setting an item registers it (so ``monkeypatch.setitem`` works in tests, and
    refuses a name already taken as ``register`` does)."""

    def __init__(self, what: str, error: type[Exception] = ConfigError, *, casefold: bool = False) -> None:
        self.what, self.error, self.casefold = what, error, casefold
        self._entries: dict[str, T] = {}
        self._places: dict[str, str] = {}  #: name or alias -> where it was registered
        self._aliases: dict[str, str] = {}  #: alias -> name
        self._rank: dict[str, tuple[float, int]] = {}
        self._count = 0

    def register(self, entry: T) -> T:
        """Add ``entry`` under its name (and aliases); returns it. A name or alias already registered elsewhere
        raises :class:`DuplicateNameError` naming both places."""
        self._add(entry, _caller_place())
        return entry

    def _add(self, entry: T, place: str) -> None:
        keys = [self._key(entry.name), *(self._key(a) for a in getattr(entry, "aliases", ()))]
        for key in keys:
            if key in self._places and self._places[key] != place:
                raise DuplicateNameError(f"{self.what} {key!r} is registered twice: at {self._places[key]} and at "
                                         f"{place}; give one of them another name")
        if entry.name in self._entries:  # the same place again: a re-import replaces the entry
            del self[entry.name]
        self._entries[entry.name] = entry
        self._places.update(dict.fromkeys(keys, place))
        self._aliases.update({k: entry.name for k in keys[1:]})
        order = getattr(entry, "order", None)
        self._rank[entry.name] = (float("inf") if order is None else order, self._count)
        self._count += 1

    def _key(self, name: str) -> str:
        return name.lower() if self.casefold else name

    def where(self, name: str) -> str:
        """``file:line`` of the ``register`` call of ``name``."""
        return self._places[self._key(name)]

    def names(self, where: Callable[[T], bool] | None = None) -> list[str]:
        """The names in order (``where``: only the entries it accepts)."""
        return [n for n in sorted(self._entries, key=self._rank.__getitem__)
                if where is None or where(self._entries[n])]

    def knows(self, name: object, where: Callable[[T], bool] | None = None) -> bool:
        """Whether ``name`` (or an alias, in any case where the registry folds case) names an entry (that
        ``where`` accepts)."""
        if not isinstance(name, str):
            return False
        key = self._key(name)
        entry = self._entries.get(self._aliases.get(key, key))
        return entry is not None and (where is None or where(entry))

    def lookup(self, name: str) -> T:
        """The entry of ``name`` (or of an alias); an unknown name raises the registry's error with the closest
        names and the known ones."""
        key = self._key(name)
        key = self._aliases.get(key, key)
        if key not in self._entries:
            hint = did_you_mean(name, [*self._entries, *self._aliases], n=3)
            raise self.error(f"unknown {self.what} {name!r}.{hint} Known: {', '.join(self.names())}")
        return self._entries[key]

    def choices(self, *extra: str, where: Callable[[T], bool] | None = None) -> Choices:
        """The names as a config field's ``choices`` (``extra`` first: ``auto``, ``all``), read when asked."""
        return Choices(self, extra, where)

    def __getitem__(self, name: str) -> T:
        return self._entries[name]

    def __setitem__(self, name: str, entry: T) -> None:
        if name != entry.name:
            raise ValueError(f"{self.what} {entry.name!r} registered as {name!r}: an entry is registered by its name")
        self._add(entry, _caller_place())

    def __delitem__(self, name: str) -> None:
        del self._entries[name]
        del self._rank[name]
        gone = [k for k, v in self._aliases.items() if v == name]
        for key in [self._key(name), *gone]:
            self._places.pop(key, None)
            self._aliases.pop(key, None)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.what!r}: {', '.join(self.names())})"
