"""Where the shared reference data lives (the folder holding net2brain78/ and kriegeskorte92/; never copied in).

Looked for, in order: $ACTLAKE_SHARED_DATA; shared/data beside the repository or beside any of its parent folders
(a clone anywhere under the folder that holds shared/); shared/data beside the current directory or any of its
parents (a checkout elsewhere, tests run from beside the data); last, /work/shared/data, where the CI machines keep
it.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: the variable that names the data (README "On a fresh machine")
VARIABLE = "ACTLAKE_SHARED_DATA"
#: where the CI machines keep the data. Their clone's location is not known here, so this stays as the last
#: candidate: without it every brain-data test could lose its data there.
CI_FALLBACK = "/work/shared/data"


def candidates() -> list[str]:
    """Every folder looked at, in order, each once."""
    found = [os.environ.get(VARIABLE) or ""]
    found += [str(p / "shared" / "data") for p in ROOT.parents]
    cwd = Path.cwd().resolve()
    found += [str(p / "shared" / "data") for p in (cwd, *cwd.parents)]
    found.append(CI_FALLBACK)
    return list(dict.fromkeys(c for c in found if c))


def shared_data() -> Path:
    """The first candidate holding net2brain78/; a message naming every place looked at when none does."""
    looked = candidates()
    for c in looked:
        if (Path(c) / "net2brain78").is_dir():
            return Path(c)
    raise FileNotFoundError(f"shared reference data not found; looked at {looked}. Set {VARIABLE} to the folder "
                            f"holding net2brain78/ and kriegeskorte92/: export {VARIABLE}=/path/to/shared/data")


DATA = shared_data()
