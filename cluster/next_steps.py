"""The one line every long command ends with: what it wrote (the page to open as a ``file://`` URL where there is
one) and the command a user runs next — so the few words that matter are the last thing on the screen.

``NEXT`` holds the next command of each command, written once; a command not in it ends with its outputs only.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable

#: the pages a command's output folder may hold, the one to open first
PAGES = ("index.html", "report.html")


def _q(value: object) -> str:
    return shlex.quote(str(value))


def _hook(cfg) -> str:
    """A hook the user named (the first one without a glob), else the placeholder ``HOOK``."""
    hooks = getattr(cfg, "hooks", None) or []
    hooks = hooks.split(",") if isinstance(hooks, str) else hooks
    plain = [h for h in hooks if not any(c in str(h) for c in "*?[")]
    return str(plain[0]) if plain else "HOOK"


NEXT: dict[str, Callable[[object], str]] = {
    "extract": lambda c: f"actlake sae train --data {_q(c.out)} --hook {_hook(c)} --out {_q(str(c.out) + '-sae')}",
    "sae train": lambda c: f"actlake sae evaluate --sae {_q(c.out)} --out {_q(str(c.out) + '-eval')}",
    "sae evaluate": lambda c: f"actlake sae dashboard --sae {_q(c.sae)} --out {_q(str(c.sae) + '-site')}",
    "sae dashboard": lambda c: f"actlake sae explain --sae {_q(c.sae)} --latents top:20 --out "
                               f"{_q(str(c.sae) + '-explain')}",
    "sae explain": lambda c: f"actlake sae score --explanations {_q(c.out)}",
    "sae score": lambda c: f"actlake sae dashboard --sae SAE --explanations {_q(c.explanations)} --out SITE",
    "sae eval": lambda c: f"actlake sae dashboard --sae {_q(c.sae)} --out {_q(str(c.sae) + '-site')}",
    "probe": lambda c: f"actlake stats --data {_q(c.data)} --label {_q(c.label)} --out {_q(str(c.out) + '-stats')}",
    "import": lambda c: f"actlake info {_q(c.out)}",
}


def outputs(out: str) -> str:
    """``out`` as a user opens it: the ``file://`` URL of its page when it has one, else the folder or URI."""
    if "://" in out and not out.startswith("file://"):
        return out
    path = os.path.abspath(out.removeprefix("file://"))
    for page in PAGES:
        if os.path.isfile(os.path.join(path, page)):
            return f"file://{os.path.join(path, page)}"
    return path


def final_line(command: str, cfg) -> str | None:
    """``actlake probe: wrote file:///…/report.html; next: actlake stats …`` (None: the command names no output)."""
    out = getattr(cfg, "out", None)
    if not out:
        return None
    line = f"actlake {command}: wrote {outputs(str(out))}"
    nxt = NEXT.get(command)
    if nxt is not None:
        try:
            line += f"; next: {nxt(cfg)}"
        except AttributeError:  # a config without the field the suggestion names: the outputs alone
            pass
    return line
