"""Long work says what it costs before it starts (``analysis/common/cost.py``), and every command ends with one
line naming its outputs and the next command (``cluster/next_steps.py``)."""

from __future__ import annotations

import json
import logging
import re
from types import SimpleNamespace

import pytest

from analysis.common.cost import CostEstimate, duration, scaled
from cluster.cli import main
from cluster.next_steps import final_line, outputs
from tests.unit.analysis.geometry_data import planted_geometry_dataset


def test_estimate_arithmetic():
    one = CostEstimate("1,200 rows × 16 dims", 10.0, "timed sample", {"a": 4.0, "b": 6.0})
    seven = one.times(7, "hooks", parallel=2)  # 4 rounds of two
    assert seven.seconds == 40.0 and seven.parts == {"a": 16.0, "b": 24.0}
    assert seven.work == "7 hooks × 1,200 rows × 16 dims, 2 at a time"
    assert [duration(s) for s in (0.2, 40, 89, 91, 600, 5399, 5400, 7200)] == \
        ["~1 s", "~40 s", "~89 s", "~2 min", "~10 min", "~90 min", "~1.5 h", "~2.0 h"]
    est, basis = scaled(2.0, 1000, 36148, "rows", fixed=3.0)
    assert est == pytest.approx(2.0 * 36.148 + 3.0)
    assert basis == "timed sample: 1,000 rows in 2.0 s, scaled to 36,148 + 3.0 s that do not grow with them"
    rec = one.record(12.345)
    assert rec == {"work": "1,200 rows × 16 dims", "estimated_seconds": 10.0, "seconds": 12.35,
                   "basis": "timed sample"}


def test_stats_says_its_cost_first_and_ends_with_its_outputs(tmp_path, capfd, caplog):
    data = tmp_path / "planted"
    planted_geometry_dataset(str(data), examples=200, tokens=6)
    out = tmp_path / "stats"
    with caplog.at_level(logging.INFO, logger="actlake"):
        code = main(["stats", "--data", str(data), "--hooks", "resid.1,resid.2", "--label", "label",
                     "--out", str(out)])
    assert code == 0
    messages = [r.getMessage() for r in caplog.records]
    plan = [i for i, m in enumerate(messages) if m.startswith("will compute 2 hooks × 1,200 rows × 16 dims")]
    first_hook = next(i for i, m in enumerate(messages) if re.match(r"resid\.\d: 1200 rows", m))
    assert plan and plan[0] < first_hook  # said before any hook ran
    assert re.search(r"estimated ~\d+ s \(timed sample: [\d,]+ rows in [\d.]+ s, scaled to 1,200", messages[plan[0]])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["cost"]["work"].startswith("2 hooks × 1,200 rows × 16 dims × 2 passes")
    assert summary["cost"]["estimated_seconds"] > 0 and summary["cost"]["seconds"] > 0
    got = capfd.readouterr()
    assert json.loads(got.out.strip().splitlines()[-1])["cost"] == summary["cost"]  # not a terminal: the JSON
    assert got.err.strip().splitlines()[-1] == (f"actlake stats: wrote {(out / 'report.html').as_uri()}; next: "
                                                f"actlake align cka --data {data} --out {out}-cka")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="actlake"):
        assert main(["stats", "--data", str(data), "--hooks", "resid.1,resid.2", "--label", "label",
                     "--out", str(out)]) == 0
    assert not any(r.getMessage().startswith("will compute") for r in caplog.records)  # a finished run: no work


def test_next_command_lines(tmp_path):
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "index.html").write_text("x")
    assert outputs(str(tmp_path / "site")) == f"file://{tmp_path / 'site' / 'index.html'}"
    assert outputs("s3://bucket/runs/x") == "s3://bucket/runs/x"
    odd = tmp_path / "a b#c%20d"
    odd.mkdir()
    (odd / "report.html").write_text("x")
    assert outputs(str(odd)).endswith("/a%20b%23c%2520d/report.html")  # a browser opens this folder, not a fragment
    cfg = SimpleNamespace(out="runs/acts", hooks=["embed", "resid.*"])
    assert final_line("extract", cfg).endswith(
        "; next: actlake sae train --data runs/acts --hook embed --out runs/acts-topk")
    glob_only = SimpleNamespace(out="runs/acts", hooks=["resid.*"])
    assert "--hook HOOK " in final_line("extract", glob_only)
    spaced = SimpleNamespace(out="runs/my sae")
    assert final_line("sae train", spaced).endswith("--sae 'runs/my sae' --out 'runs/my sae-eval'")
    assert final_line("verify", SimpleNamespace()) is None  # no output named: no line
