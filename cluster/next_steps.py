"""The one line every long command ends with: what it wrote (the page to open as a ``file://`` URL where there is
one) and the command a user runs next — so the few words that matter are the last thing on the screen.

``NEXT`` holds the next command of each command, written once; a command not in it ends with its outputs only.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable
from pathlib import Path

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


def _causal(cfg) -> str:
    """`` --min-position 1`` for a causal LM's dataset (its first token is the attention sink, which an SAE should
    not train on), from the architecture the dataset's manifest records."""
    try:
        from shards.reader import open_dataset

        arch = str(open_dataset(str(cfg.out), cfg.storage).manifest.model.architecture or "")
    except Exception:  # noqa: BLE001 - a suggestion, never a failure
        return ""
    return " --min-position 1" if arch.endswith(("ForCausalLM", "LMHeadModel")) else ""


NEXT: dict[str, Callable[[object], str]] = {
    "extract": lambda c: f"actlake sae train --data {_q(c.out)} --hook {_hook(c)}{_causal(c)} --out "
                         f"{_q(str(c.out) + '-topk')}",
    "sae train": lambda c: f"actlake sae evaluate --sae {_q(c.out)} --out {_q(str(c.out) + '-eval')}",
    "sae evaluate": lambda c: f"actlake sae dashboard --sae {_q(c.sae)} --out {_q(str(c.sae) + '-site')}",
    "sae dashboard": lambda c: f"actlake sae eval --sae {_q(c.sae)} --examples 128 --out "
                               f"{_q(str(c.sae) + '-in-model')}",
    "sae explain": lambda c: f"actlake sae score --explanations {_q(c.out)}",
    "sae score": lambda c: f"actlake sae dashboard --sae SAE --explanations {_q(c.explanations)} --out SITE",
    "sae eval": lambda c: f"actlake sae dashboard --sae {_q(c.sae)} --out {_q(str(c.sae) + '-site')}",
    "probe": lambda c: f"actlake stats --data {_q(c.data)} --label {_q(c.label)} --out {_q(str(c.out) + '-stats')}",
    "import": lambda c: f"actlake info {_q(c.out)}",
    "stats": lambda c: f"actlake align cka --data {_q(c.data)} --out {_q(str(c.out) + '-cka')}",
}


def outputs(out: str) -> str:
    """``out`` as a user opens it: the ``file://`` URL of its page when it has one, else the folder or URI."""
    if "://" in out and not out.startswith("file://"):
        return out
    path = Path(os.path.abspath(out.removeprefix("file://")))
    for page in PAGES:
        if (path / page).is_file():
            return (path / page).as_uri()  # percent-encoded: a space, '#' or '%' in a folder name opens right
    return str(path)


def _storage_flags(cfg) -> str:
    """The storage flags of ``cfg`` a pasted next command needs to reach the same store (never credentials)."""
    st = getattr(cfg, "storage", None)
    flags = [f"--{name.replace('_', '-')} {_q(getattr(st, name))}" for name in ("endpoint_url", "region", "profile")
             if getattr(st, name, None)]
    return (" " + " ".join(flags)) if flags else ""


def final_line(command: str, cfg) -> str | None:
    """``actlake probe: wrote file:///…/report.html; next: actlake stats …`` (None: the command names no output)."""
    out = getattr(cfg, "out", None) or getattr(cfg, "dst", None)  # `copy` writes to its DST
    if not out:
        return None
    line = f"actlake {command}: wrote {outputs(str(out))}"
    nxt = NEXT.get(command)
    if nxt is not None:
        try:
            line += f"; next: {nxt(cfg)}{_storage_flags(cfg)}"
        except AttributeError:  # a config without the field the suggestion names: the outputs alone
            pass
    return line
