"""How the format-v1 fixtures beside this file were made (run once, at commit 7b0a2cd, with that day's writer).

    python tests/historical_datasets/make_v1.py tests/historical_datasets/v1

Every value is a pure function of (unit id, rows, seed) through ``tests.helpers.unit_columns``, so the
reading test regenerates what it expects instead of storing it twice. Do not rerun this with a newer
writer: the point of the fixtures is that they were written by the old one.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import shards  # noqa: E402
from tests.helpers import HOOKS, unit_columns  # noqa: E402

#: the hooks of the multi-dtype fixture: the three float dtypes of v1 plus int32 index tensors
V1_HOOKS = {**HOOKS, "ids": {"shape": [3], "dtype": "int32"}}
UNITS, ROWS, SEED = 3, 8, 11


def v1_columns(unit: int) -> dict:
    cols = unit_columns(unit, ROWS, HOOKS, SEED)
    rng = np.random.default_rng([SEED, unit, 1])
    cols["ids"] = rng.integers(-5, 1000, (ROWS, 3)).astype(np.int32)
    return cols


def main(out: str) -> None:
    root = Path(out)
    shutil.rmtree(root, ignore_errors=True)
    provenance = {"model": {"name": "synthetic", "path": "/nowhere", "dtype": "float32", "device": "cpu",
                            "parameters": 0, "architecture": "none", "revision": None, "max_positions": None},
                  "corpus": {"source": "tests.helpers.unit_columns", "seed": SEED}}
    with shards.create_dataset(str(root / "multi-dtype"), V1_HOOKS, columns={"label": "string", "score": "float64"},
                               provenance=provenance, config={"command": "make_v1", "seed": SEED}) as w:
        for u in range(UNITS):
            w.write_unit(u, v1_columns(u))
    list_hooks = {k: HOOKS[k] for k in ("resid.0", "resid.1")}
    with shards.create_dataset(str(root / "list-zstd"), list_hooks, columns={"label": "string", "score": "float64"},
                               encoding="list", compression="zstd") as w:
        for u in range(2):
            w.write_unit(u, unit_columns(u, ROWS, list_hooks, SEED))


if __name__ == "__main__":
    main(sys.argv[1])
