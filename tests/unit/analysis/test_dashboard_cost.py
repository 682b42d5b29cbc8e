"""`actlake sae dashboard` says what its passes will cost before they are done (issue 42): the first rows of the
collection pass are timed (after an untimed warm-up batch), scaled to every row and both passes, the line logged
before the second pass starts, and the estimate kept beside the measured time in summary.json's ``cost``; where
a `sae explain` output's kept collection pass is reused, only the second pass runs and is estimated."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import shards
from analysis.sae.dashboard import run as dash
from analysis.sae.dashboard.collect import LatentCollector, sae_digest
from analysis.sae.io import save_sae
from analysis.sae.registry import create_sae

ROWS, D, D_SAE, TOKENS = 9000, 8, 16, 30
WORK = f"{ROWS:,} rows × {D} → {D_SAE} latents"


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A token dataset of 9,000 rows (examples of 30 tokens, two units) and an SAE trained on nothing."""
    root = tmp_path_factory.mktemp("cost")
    rng = np.random.default_rng(0)
    ds = str(root / "ds")
    with shards.create_dataset(ds, {"resid.0": {"shape": [D], "dtype": "float32"}}) as w:
        for u, sl in enumerate((slice(0, ROWS // 2), slice(ROWS // 2, ROWS))):
            idx = np.arange(ROWS)[sl]
            w.write_unit(u, {"example_id": idx // TOKENS, "position": idx % TOKENS,
                             "token_id": rng.integers(0, 500, len(idx)),
                             "resid.0": rng.standard_normal((len(idx), D)).astype(np.float32)})
    sae = create_sae("relu", d_in=D, d_sae=D_SAE, seed=0)
    save_sae(sae, str(root / "sae"), {"hook": "resid.0", "dataset": ds})
    return root, ds, sae


def _second_pass_marked(monkeypatch) -> None:
    """A log record where the second pass starts, to check the estimate came before it."""
    inner = dash._pair_values

    def marked(*a, **k):
        dash.log.info("-- second pass starts --")
        return inner(*a, **k)

    monkeypatch.setattr(dash, "_pair_values", marked)


def test_the_cost_is_logged_before_the_passes_and_recorded(made, caplog, monkeypatch):
    root, _, _ = made
    _second_pass_marked(monkeypatch)
    with caplog.at_level("INFO", logger="actlake.sae"):
        summary = dash.run(dash.SaeDashboardConfig(sae=str(root / "sae"), out=str(root / "site"), top=4,
                                                   context=2, batch_size=1000))
    lines = [r.getMessage() for r in caplog.records]
    said = [i for i, m in enumerate(lines) if m.startswith(f"will compute {WORK}, 2 passes; estimated ~")]
    assert len(said) == 1 and said[0] < lines.index("-- second pass starts --")
    cost = summary.cost
    assert cost["work"] == f"{WORK}, 2 passes"
    # 1/20 of 9,000 rows is under the 4,000-row floor: 4 batches of 1,000 after the warm-up batch
    assert cost["basis"].startswith("timed sample: 4,000 rows in ") and f"scaled to {ROWS:,}" in cost["basis"]
    assert cost["basis"] in lines[said[0]]
    assert cost["estimated_seconds"] > 0 and cost["seconds"] > 0
    assert json.loads((root / "site" / "summary.json").read_text())["cost"] == cost


def test_a_reused_collection_pass_leaves_one_pass_to_estimate(made, caplog):
    """A `sae explain` output with its kept collection pass of this SAE over these rows: the dashboard runs the
    second pass only, and the estimate is of that pass."""
    from analysis.interp.files import EXPLANATIONS, TABLE, TABLE_INFO, table_info

    root, ds_uri, sae = made
    ds, ex = shards.open_dataset(ds_uri), root / "ex"
    ex.mkdir()
    collector = LatentCollector(D_SAE, 4)
    for batch, keep in dash._kept_batches(ds, "resid.0", 1000, 0):
        collector.add(dash._encode(sae.eval(), batch["x"]), keep)
    (ex / TABLE).write_bytes(collector.table().to_npz())
    (ex / TABLE_INFO).write_text(json.dumps(table_info(ds, "resid.0", 0, 4, sae_digest(sae), seed=0)))
    (ex / "summary.json").write_text(json.dumps({"sae_digest": sae_digest(sae)}))
    (ex / EXPLANATIONS).write_text(json.dumps({"latent": 3, "explanation": "three"}) + "\n")
    with caplog.at_level("INFO", logger="actlake.sae"):
        summary = dash.run(dash.SaeDashboardConfig(sae=str(root / "sae"), out=str(root / "site-ex"), top=4,
                                                   context=2, batch_size=1000, explanations=str(ex)))
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "serves this dashboard" in text  # the kept pass was taken: no collection pass ran
    assert summary.cost["work"] == f"{WORK}, 1 pass (the collection pass of {ex} reused)"
    assert summary.cost["basis"].startswith("timed sample of that pass: 4,000 rows in ")
    assert f"will compute {summary.cost['work']}; estimated ~" in text


def _batches(sizes):
    return ((({"x": torch.zeros(n, 2)}), None) for n in sizes)


def test_the_sample_starts_after_the_warm_up_batch():
    """The estimate is made once 4,000 rows after the warm-up batch have been read and worked on; the second
    pass' share leaves out the time spent collecting."""
    clock = dash._PassClock(20_000, SimpleNamespace(d_in=2, d_sae=4))
    seen = []
    for _batch, _keep in clock.timed(_batches([1000] * 20)):
        seen.append(clock.estimate is not None)
        with clock.collecting():
            time.sleep(0.002)
    # batch 0 warms up, batches 1-4 are the sample: the estimate exists from batch 5 on
    assert seen == [False] * 5 + [True] * 15
    assert clock.estimate.basis.startswith("timed sample: 4,000 rows in ")
    assert clock.estimate.parts["contexts"] < clock.estimate.parts["collect"]
    assert clock.record()["work"] == "20,000 rows × 2 → 4 latents, 2 passes"


@pytest.mark.parametrize(("sizes", "rows"), [([700], 700), ([1000, 1000, 500], 1500)])
def test_a_dataset_smaller_than_a_sample_is_estimated_from_what_was_read(sizes, rows):
    """One batch: the warm-up batch is all there is to time; a few: the rows after it."""
    clock = dash._PassClock(sum(sizes), SimpleNamespace(d_in=2, d_sae=4))
    assert sum(1 for _ in clock.timed(_batches(sizes))) == len(sizes)
    assert clock.estimate.basis.startswith(f"timed sample: {rows:,} rows in ")
