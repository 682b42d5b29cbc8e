"""Shared test data: deterministic units of activations and metadata."""

from __future__ import annotations

import numpy as np
import torch

HOOKS = {
    "resid.0": {"shape": [16], "dtype": "float16"},
    "resid.1": {"shape": [4, 3], "dtype": "bfloat16"},
    "mlp.0": {"shape": [8], "dtype": "float32"},
}


def unit_columns(unit_id: int, rows: int, hooks: dict = HOOKS, seed: int = 0) -> dict:
    """Rows of one unit, a pure function of (unit_id, rows, seed): reruns write the same bytes."""
    rng = np.random.default_rng([seed, unit_id])
    cols = {
        "example_id": np.arange(unit_id * rows, (unit_id + 1) * rows, dtype=np.int64),
        "position": (np.arange(rows) % 7).astype(np.int32),
        "token_id": rng.integers(0, 50000, rows).astype(np.int32),
        "label": np.array([f"label-{i % 3}" for i in range(rows)], dtype=object),
        "score": rng.standard_normal(rows),
    }
    for name, spec in hooks.items():
        x = torch.from_numpy(rng.standard_normal((rows, *spec["shape"])).astype(np.float32) * 3)
        cols[name] = x.to(getattr(torch, spec["dtype"]))
    return cols


def write_dataset(uri: str, units: int = 4, rows: int = 50, hooks: dict = HOOKS, seed: int = 0, **kwargs):
    import shards

    with shards.create_dataset(uri, hooks, columns={"label": "string", "score": "float64"}, **kwargs) as w:
        for u in range(units):
            w.write_unit(u, unit_columns(u, rows, hooks, seed))
    return shards.open_dataset(uri, kwargs.get("storage_options"))


def raw_bytes(t) -> bytes:
    """Storage bytes of a tensor (bfloat16 as its 16-bit pattern)."""
    t = t.contiguous()
    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)
    return t.numpy().tobytes()


def edit_manifest(root, edit) -> None:
    """Change a dataset's manifest.json in place as a careless (or hostile) editor would: ``edit(dict)``."""
    import json
    from pathlib import Path

    path = Path(root) / "manifest.json"
    m = json.loads(path.read_text())
    edit(m)
    path.write_text(json.dumps(m))


def listed_units(m: dict) -> list[dict]:
    """The unit entries a root ``manifest.json`` (parsed) lists itself: v1/v2 its ``units``; v3 the changes since
    its checkpoint (every unit of a small dataset whose checkpoint is its empty first version)."""
    return m["units"] if isinstance(m["units"], list) else m["units"]["added"]


def unit_rel(root, unit_id: int) -> str:
    """The data file a dataset's latest version names for ``unit_id`` (format v2+: ``data/unit-N-<attempt>``)."""
    import shards

    return next(u.path for u in shards.open_dataset(str(root)).units if u.id == unit_id)


def unit_file(root, unit_id: int):
    """``unit_rel`` as a local path."""
    from pathlib import Path

    return Path(root) / unit_rel(root, unit_id)


def stats_file(root, hook: str):
    """The statistics file a dataset's latest manifest names for ``hook`` (format v2: one per version)."""
    import json
    from pathlib import Path

    m = json.loads((Path(root) / "manifest.json").read_text())
    return Path(root) / (m.get("stats_files") or {}).get(hook, f"stats/{hook}.npz")


def held_on_another_host(root) -> None:
    """Make a dataset's write lock look held by a live writer on another machine (its heartbeat fresh): the case
    `--break-lock` / `actlake unlock` exist for. A live holder on this host is never broken."""
    import json
    import time
    from pathlib import Path

    lock = Path(root) / "_lock.json"
    holder = json.loads(lock.read_text())
    lock.write_text(json.dumps({**holder, "host": "another-host", "pid": 4242, "heartbeat": time.time()}))
