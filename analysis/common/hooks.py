"""Hook names in layer order: the embeddings first, then block by block (resid.2 before resid.10)."""

from __future__ import annotations

import re

from shards.schema import natural_key

_EMBED = ("embed", "embeddings", "embedder")


def layer_index(hook: str) -> int:
    """The block a hook reads: -1 for the embeddings, N for ``resid.N``, ``stage.N`` or
    ``model.layers.N.mlp``-style paths (the first number), a large value for hooks with none."""
    if hook.split(".")[0] in _EMBED:
        return -1
    m = re.search(r"(?:^|\.)(\d+)(?:\.|$)", hook)
    return int(m.group(1)) if m else 1 << 30


def in_layer_order(hooks: list[str]) -> list[str]:
    return sorted(hooks, key=lambda h: (layer_index(h), natural_key(h)))
