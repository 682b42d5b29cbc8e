"""Columns that extraction adds beside the fixed ones (``shards.schema.FIXED_COLUMNS``), in one place."""

from __future__ import annotations

from shards.schema import FIXED_COLUMNS

#: packed text: which context a token ran in, and where in it
CONTEXT_COLUMNS: dict[str, str] = {"context_id": "int64", "context_position": "int32"}
#: images: the stimulus a row belongs to (joins rows to brain data)
STIMULUS_COLUMNS: dict[str, str] = {"stimulus_id": "string"}
#: images with a row per patch: the patch's grid position (-1 for CLS/register tokens)
PATCH_COLUMNS: dict[str, str] = {"patch_row": "int32", "patch_col": "int32"}
#: names a corpus or image source field may not take
RESERVED = frozenset({*FIXED_COLUMNS, *CONTEXT_COLUMNS, *STIMULUS_COLUMNS, *PATCH_COLUMNS})
