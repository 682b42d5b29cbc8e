"""How the format-v2 fixture beside this file was made (run once, at commit 9abbd2a, with that day's writer: every
version a whole manifest under ``_versions/``).

    PYTHONPATH=<checkout of 9abbd2a> python tests/historical_datasets/make_v2.py tests/historical_datasets/v2

Three versions of appends and a dropped unit, so that reading each kept version, and appending (the first v3
version chained to the last v2 manifest), are tested on what the old writer wrote. Values come from
``tests.helpers.unit_columns`` as for v1. Do not rerun this with a newer writer.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import shards
from tests.helpers import HOOKS, unit_columns

ROWS, SEED = 6, 13


def main(out: str) -> None:
    root = Path(out) / "appended"
    shutil.rmtree(root, ignore_errors=True)
    for units in ((0, 1), (2,), (3,)):
        with shards.create_dataset(str(root), HOOKS, columns={"label": "string", "score": "float64"},
                                   mode="append") as w:
            for u in units:
                w.write_unit(u, unit_columns(u, ROWS, HOOKS, SEED))
    with shards.create_dataset(str(root), HOOKS, columns={"label": "string", "score": "float64"},
                               mode="append") as w:
        w.drop_units([1])
    print(shards.open_dataset(str(root)).manifest.format_version, shards.open_dataset(str(root)).version)


if __name__ == "__main__":
    main(sys.argv[1])
