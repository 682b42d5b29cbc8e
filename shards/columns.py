"""Names of the columns a dataset's rows carry besides the hooks, written once (docs/format.md, "Rows").

The fixed columns are the format's own (``shards.schema.FIXED_COLUMNS`` gives their types); the others are added
by extraction (``ingest/columns.py`` gives their types) and read by the analyses, which may not import ``ingest``:
every package imports the names from here. Tests that check the on-disk format on purpose may spell them out.
"""

from __future__ import annotations

#: fixed columns: every dataset has them, in this order
EXAMPLE_ID = "example_id"  #: the input example (document, image) a row comes from
POSITION = "position"  #: the token's (or patch's) index in its example; -1 for pooled rows
TOKEN_ID = "token_id"  #: the token's id in the model's vocabulary; null for images and pooled rows

#: images and imported features: the stimulus a row belongs to (joins rows to brain data)
STIMULUS_ID = "stimulus_id"
#: packed text: which context a token ran in, and where in it
CONTEXT_ID = "context_id"
CONTEXT_POSITION = "context_position"
#: images with a row per patch: the patch's grid position (-1 for CLS/register tokens)
PATCH_ROW = "patch_row"
PATCH_COL = "patch_col"
