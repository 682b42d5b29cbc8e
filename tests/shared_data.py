"""Where the shared reference data lives (../shared/data from the repository root; never copied in).

Looked for, in order: $ACTLAKE_SHARED_DATA, shared/data beside the repository or beside any of its
parent folders (a clone elsewhere on the machine), /work/shared/data.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def shared_data() -> Path:
    candidates = [os.environ.get("ACTLAKE_SHARED_DATA")]
    candidates += [str(p / "shared" / "data") for p in ROOT.parents]
    candidates.append("/work/shared/data")
    for c in candidates:
        if c and (Path(c) / "net2brain78").is_dir():
            return Path(c)
    raise FileNotFoundError(f"shared reference data not found; looked at {[c for c in candidates if c]}. "
                            "Set ACTLAKE_SHARED_DATA to the folder holding net2brain78/ and kriegeskorte92/.")


DATA = shared_data()
