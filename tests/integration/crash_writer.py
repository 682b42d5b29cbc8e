"""A writer process for the crash tests: writes units 0..N-1 (skipping committed ones), slowly.

Usage: python -m tests.integration.crash_writer URI UNITS ROWS
Each unit's rows are a pure function of its id, so a rerun writes the same bytes.
"""

from __future__ import annotations

import sys

import shards
from tests.helpers import unit_columns

BIG = {"resid.0": {"shape": [2048], "dtype": "float16"}, "mlp.0": {"shape": [512], "dtype": "float32"}}


def main() -> None:
    uri, units, rows = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    with shards.create_dataset(uri, BIG, columns={"label": "string", "score": "float64"}, mode="append") as w:
        skipped = 0
        for u in range(units):
            if w.is_committed(u):
                skipped += 1
                continue
            print(f"writing {u}", flush=True)
            w.write_unit(u, unit_columns(u, rows, BIG))
        print(f"done skipped={skipped}", flush=True)


if __name__ == "__main__":
    main()
