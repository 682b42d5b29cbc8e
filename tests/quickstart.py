"""The quickstart's commands, read from docs/quickstart.md (the block after ``<!-- quickstart -->``), so that
what CI runs is what the page says; ``python -m tests.quickstart --workdir DIR`` runs them at full size, timing
each (the times the page quotes).

``make demo`` (the first command) is expanded into the Makefile's own ``demo`` commands, so that it runs with
the substitutions too.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "quickstart.md"
MARK = "<!-- quickstart -->"


def page_commands(text: str) -> list[str]:
    """The commands of the first fenced block after the marker: continuation lines joined, comments dropped."""
    after = text.split(MARK, 1)[1]
    block = re.search(r"```bash\n(.*?)```", after, re.S).group(1)
    joined = re.sub(r"\\\n\s*", " ", block)
    out = []
    for line in joined.splitlines():
        cmd = line.split(" # ", 1)[0].strip() if not line.lstrip().startswith("#") else ""
        if cmd:
            out.append(cmd)
    return out


def make_demo_commands() -> list[str]:
    """``make demo``'s own commands from the Makefile (setup is the caller's), with ``actlake`` from PATH."""
    text = (ROOT / "Makefile").read_text()
    body = re.search(r"^demo:.*?\n((?:\t.*\n)+)", text, re.M).group(1)
    body = re.sub(r"\\\n\s*", " ", body)
    return [line.strip().replace("$(VENV)/bin/", "") for line in body.splitlines() if line.strip()]


def expand(commands: list[str]) -> list[str]:
    """The page's commands as a shell runs them here: ``make demo && source …`` becomes the demo's commands."""
    out = []
    for cmd in commands:
        if cmd.startswith("make demo"):
            out += make_demo_commands()
        else:
            out.append(cmd)
    return out


def substitute(commands: list[str], table: list[tuple[str, str]]) -> list[str]:
    """Each ``(old, new)`` replaced everywhere; one that no command holds fails (the page changed under it)."""
    text = "\n".join(commands)
    for old, new in table:
        if old not in text:
            raise AssertionError(f"the quickstart no longer holds {old!r}: update the test's small-size table")
        text = text.replace(old, new)
    return text.split("\n")


def run_all(commands: list[str], cwd: Path, env: dict, log=None) -> list[dict]:
    """Run each command in ``cwd`` (a shell, as a user pastes it), stopping at the first failure; the time,
    exit status and last lines of each."""
    results = []
    for cmd in commands:
        t0 = time.perf_counter()
        p = subprocess.run(["bash", "-c", cmd], cwd=cwd, env=env, capture_output=True, text=True)
        rec = {"command": cmd, "rc": p.returncode, "seconds": round(time.perf_counter() - t0, 1),
               "stdout": p.stdout, "stderr": p.stderr}
        results.append(rec)
        if log:
            print(json.dumps({k: rec[k] for k in ("command", "rc", "seconds")}), file=log, flush=True)
        if p.returncode:
            break
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--workdir", required=True, help="where the commands run (their relative outputs go there)")
    ap.add_argument("--json", help="append each command's time and status here")
    args = ap.parse_args()
    cwd = Path(args.workdir)
    cwd.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PATH=f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}")
    cmds = expand(page_commands(PAGE.read_text()))
    with open(args.json, "a") if args.json else open(os.devnull, "w") as f:
        for rec in run_all(cmds, cwd, env, log=sys.stdout):
            f.write(json.dumps({"date": time.strftime("%F %T"), **{k: rec[k] for k in ("command", "rc", "seconds")},
                                "tail": (rec["stdout"] + rec["stderr"])[-3000:]}) + "\n")
            if rec["rc"]:
                print(rec["stderr"][-3000:], file=sys.stderr)
    print(shlex.join(["done", str(cwd)]))


if __name__ == "__main__":
    main()
