"""Columns that extraction adds beside the fixed ones (``shards.schema.FIXED_COLUMNS``), in one place."""

from __future__ import annotations

from shards.columns import CONTEXT_ID, CONTEXT_POSITION, PATCH_COL, PATCH_ROW, STIMULUS_ID
from shards.schema import FIXED_COLUMNS

#: packed text: which context a token ran in, and where in it
CONTEXT_COLUMNS: dict[str, str] = {CONTEXT_ID: "int64", CONTEXT_POSITION: "int32"}
#: images: the stimulus a row belongs to (joins rows to brain data)
STIMULUS_COLUMNS: dict[str, str] = {STIMULUS_ID: "string"}
#: images with a row per patch: the patch's grid position (-1 for CLS/register tokens)
PATCH_COLUMNS: dict[str, str] = {PATCH_ROW: "int32", PATCH_COL: "int32"}
#: names a corpus or image source field may not take
RESERVED = frozenset({*FIXED_COLUMNS, *CONTEXT_COLUMNS, *STIMULUS_COLUMNS, *PATCH_COLUMNS})
