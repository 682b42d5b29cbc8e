"""Analyses read finite activations only: a hook holding NaN or ±inf values (written with ``extract
--allow-nonfinite``, or by a writer before that check existed) is refused before any work, naming the hook and its
count, instead of producing NaN weights, NaN scores or a LinAlgError deep inside a solver."""

from __future__ import annotations

import numpy as np

from shards.errors import NonFiniteError
from shards.reader import Dataset


def nonfinite_count(ds: Dataset, hook: str) -> int:
    """NaN and ±inf values the dataset's statistics count for ``hook`` (a dataset written before they were
    counted: 1 when its moments are not finite, which they are exactly when a value is not); 0 without
    statistics."""
    summary = ds.manifest.stats.get(hook)
    if summary is None:
        return 0
    if summary.nonfinite:
        return int(summary.nonfinite)
    st = ds.stats(hook)
    return 0 if np.isfinite(st.mean).all() and np.isfinite(st.m2).all() else max(1, st.nonfinite)


def require_finite(ds: Dataset, hooks: list[str], command: str, flags: str = "--hooks") -> None:
    """Refuse hooks holding non-finite values; ``flags``: the command's options naming hooks (the advice)."""
    bad = {h: n for h in hooks if (n := nonfinite_count(ds, h))}
    if bad:
        where = ", ".join(f"{h} ({n:,} values)" for h, n in bad.items())
        raise NonFiniteError(f"`actlake {command}` needs finite activations; {ds.storage.display()} (version "
                             f"{ds.version}) holds NaN or infinite values in {where} (`actlake info` shows the "
                             f"counts). Leave those hooks out ({flags}), or extract them again with --dtype bfloat16 "
                             "or float32 (float16 overflows above 65,504).")
