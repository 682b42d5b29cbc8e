"""Dataclasses written as JSON objects of their fields, and read back (fields a newer writer added are ignored)."""

from __future__ import annotations

import dataclasses
from typing import Any


class JsonRecord:
    """Mixin for a dataclass whose fields are JSON values (nested dataclasses become objects)."""

    def to_json(self) -> dict:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_json(cls, d: dict[str, Any]):
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in d.items() if k in names})
