"""The writer's units: the version it opened, read only when a question needs it, and its changes since.

Why: a writer that opens a dataset of a million units to add one (a scheduled tick) must not read a million unit
entries first. Opening knows the units' count, rows, bytes, largest id and digest from the version's record
(``counts``); a unit whose id is above the largest is new without reading anything, and the unit list itself is
read (once, as Arrow columns) only when a question needs it: is this older id committed, which units are there.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping

import numpy as np

from shards.unit_table import UnitTable
from shards.units import UnitEntry


class UnitSet(MutableMapping):
    """Unit entries by id: a base unit list (a ``LazyUnitTable``/``UnitTable``/sequence of entries, or None) and
    the entries added, replaced or removed since. ``max_id``: the base's largest id when known without reading it
    (None: unknown, read the base to answer)."""

    def __init__(self, base=None, count: int = 0, max_id: int | None = -1) -> None:
        self._base = base
        self._table: UnitTable | None = None
        self._changed: dict[int, UnitEntry] = {}
        self._removed: set[int] = set()
        self._len = count if base is not None else 0
        self._max_id = max_id if base is not None else -1

    # --- the base, read on demand ---------------------------------------------------------------------------
    def base_table(self) -> UnitTable:
        """The base unit list as a table (read and checked on the first call)."""
        if self._table is None:
            b = self._base
            if b is None:
                self._table = UnitTable.empty()
            elif hasattr(b, "loaded"):
                self._table = b.loaded()
            elif isinstance(b, UnitTable):
                self._table = b
            else:
                self._table = UnitTable.from_entries(b)
            self._max_id = int(self._table.ids[-1]) if len(self._table) else -1
        return self._table

    def _base_index(self, uid: int) -> int | None:
        if self._base is None or (self._max_id is not None and uid > self._max_id):
            return None
        ids = self.base_table().ids
        i = int(np.searchsorted(ids, uid))
        return i if i < len(ids) and ids[i] == uid else None

    @property
    def max_id(self) -> int:
        """The largest unit id (-1 when there is none)."""
        if self._max_id is None:
            self.base_table()
        top = max(self._changed, default=-1)
        if self._removed and self._max_id in self._removed:  # the largest base id is gone: look again
            kept = [i for i in self if i not in self._changed]
            return max(top, max(kept, default=-1))
        return max(top, self._max_id if self._max_id is not None else -1)

    # --- the mapping ---------------------------------------------------------------------------------------
    def __getitem__(self, uid: int) -> UnitEntry:
        if uid in self._changed:
            return self._changed[uid]
        if uid in self._removed:
            raise KeyError(uid)
        i = self._base_index(uid)
        if i is None:
            raise KeyError(uid)
        return self.base_table()[i]

    def __contains__(self, uid) -> bool:
        return uid in self._changed or (uid not in self._removed and self._base_index(int(uid)) is not None)

    def __setitem__(self, uid: int, entry: UnitEntry) -> None:
        if uid not in self:
            self._len += 1
        self._changed[uid] = entry
        self._removed.discard(uid)

    def __delitem__(self, uid: int) -> None:
        if uid not in self:
            raise KeyError(uid)
        self._changed.pop(uid, None)
        if self._base_index(uid) is not None:
            self._removed.add(uid)
        self._len -= 1

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[int]:
        """Ids in increasing order (reads the base)."""
        base = [int(i) for i in self.base_table().ids if int(i) not in self._removed and int(i) not in self._changed]
        return iter(sorted([*base, *self._changed]))

    def table(self) -> UnitTable:
        """Every unit as one table (the base with the changes applied): what a first checkpoint lists."""
        if not (self._changed or self._removed):
            return self.base_table()
        return UnitTable.layered([self.base_table(), UnitTable.from_entries(self._changed.values())],
                                 sorted(self._removed))
