"""Dataclasses written as JSON objects of their fields, and read back (fields a newer writer added are ignored); one
JSON object read from metadata bytes with a clear error."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from shards.errors import CorruptManifestError


class JsonRecord:
    """Mixin for a dataclass whose fields are JSON values (nested dataclasses become objects)."""

    def to_json(self) -> dict:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_json(cls, d: dict[str, Any]):
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in d.items() if k in names})


def json_object(raw: bytes, where: str, what: str, fix: str) -> dict:
    """``raw`` parsed as one JSON object; otherwise CorruptManifestError naming ``where``, what was expected and
    ``fix`` (metadata files: manifests, log entries, checkpoints)."""
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise CorruptManifestError(f"{where} is not valid JSON ({type(exc).__name__}: {exc}). {fix}") from None
    if not isinstance(data, dict):
        raise CorruptManifestError(f"{where} holds a {type(data).__name__}, not {what}. {fix}")
    return data
