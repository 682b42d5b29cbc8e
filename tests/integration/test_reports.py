"""``report.html`` beside every analysis run (issue 27, item 2), opened in a real headless chromium: a table per
Parquet file with its rows, sorting, the hook links filtering every table, the plots the run wrote (byte for
byte), the dataset id and version read, no console error and nothing fetched from the network."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

import shards
from analysis.align.config import CkaConfig, RsaConfig
from analysis.common.report_command import ReportConfig, ReportError
from analysis.common.report_command import run as report
from analysis.common.report_files import MAX_ROWS
from analysis.geometry.config import StatsConfig
from analysis.probe.config import ProbeConfig
from analysis.sae.config import SaeTrainConfig
from ingest.imports import ImportConfig, import_features
from tests.browser import ARTIFACTS, render
from tests.shared_data import DATA
from tests.unit.analysis.probe_data import planted_probe_dataset
from tests.unit.analysis.sae_data import synthetic_dictionary

pytestmark = pytest.mark.integration
N2B = DATA / "net2brain78"


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """One finished run of each analysis command, small."""
    import analysis.geometry.run as stats_run
    from analysis.align.pairs_run import run as cka_run
    from analysis.align.rsa_run import run as rsa_run
    from analysis.probe.run import run as probe_run
    from analysis.sae.train import train_sae

    root = tmp_path_factory.mktemp("reports")
    data = str(root / "ds")
    planted_probe_dataset(data, examples=60)
    stats_run.run(StatsConfig(data=data, out=str(root / "stats"), hooks=["resid.*"], label="label", sample=200,
                              threads=1))
    probe_run(ProbeConfig(data=data, out=str(root / "probe"), hooks=["resid.*"], label="label", threads=1))
    cka_run(CkaConfig(data=data, hooks=["resid.*"], out=str(root / "cka")))
    resnet = str(root / "resnet18")
    import_features(ImportConfig(src=str(N2B / "resnet18_layer3.1.conv2"), layout="net2brain", stimulus_id="image",
                                 out=resnet))
    rsa_run(RsaConfig(data=resnet, hooks=["layer*"], brain=[str(N2B / "fmri_IT_RDMs.npz")], out=str(root / "rsa")))
    synthetic_dictionary(str(root / "synth"), rows=6000)
    train_sae(SaeTrainConfig(data=str(root / "synth"), hook="x", arch="topk", k="4", expansion="2", tokens="20k",
                             batch_size=1024, out=str(root / "sae"), checkpoint_every=0, threads=1, log_every=5))
    return {"data": Path(data), **{k: root / k for k in ("stats", "probe", "cka", "rsa", "sae")}}


def _tables(dom: str) -> dict[str, list[str]]:
    """Each rendered table's rows (their HTML), by table name."""
    out = {}
    for name, body in re.findall(r'<table class="data" data-name="([^"]+)"[^>]*>.*?<tbody>(.*?)</tbody>', dom, re.S):
        out[name] = re.findall(r"<tr[^>]*>.*?</tr>", body, re.S)
    return out


@pytest.mark.parametrize("kind", ["stats", "probe", "cka", "rsa", "sae"])
def test_every_run_writes_a_page_of_its_tables_and_plots(runs, kind, chromium):
    out = runs[kind]
    dom, log = render(chromium, f"file://{out}/report.html", ARTIFACTS / f"report-{kind}.png", height=2200)
    assert "Uncaught" not in log and "ERROR:CONSOLE" not in log
    record = json.loads((out / "run.json").read_text())
    assert "report.html" in record["files"]  # --overwrite of this run removes its page too
    parquet = sorted(f for f in record["files"] if f.endswith(".parquet"))
    jsonl = sorted(f for f in record["files"] if f.endswith(".jsonl"))
    tables = _tables(dom)
    assert sorted(t for t in tables if not t.startswith("summary: ")) == sorted(parquet + jsonl) and tables
    for name in parquet:
        assert len(tables[name]) == min(pq.ParquetFile(out / name).metadata.num_rows, MAX_ROWS), name
    for name in jsonl:
        assert len(tables[name]) == min(len((out / name).read_text().splitlines()), MAX_ROWS), name
    pngs = sorted(f for f in record["files"] if f.endswith(".png"))
    shown = dict(re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,([^"]+)"', dom))
    assert sorted(shown) == pngs and pngs
    for name in pngs:
        assert base64.b64decode(shown[name]) == (out / name).read_bytes()
    ds = record["dataset"]
    assert f"dataset <b>{ds['dataset_id']}</b> version <b>{ds['version']}</b>" in dom
    assert not re.search(r"(src|href)=[\"']?(https?:)?//", (out / "report.html").read_text())


def test_sorting_and_the_hook_links(runs, chromium):
    out = runs["stats"]
    want = pq.read_table(out / "stats.parquet").to_pandas()
    dom, _ = render(chromium, f"file://{out}/report.html?sort=mean_norm&order=asc")
    rows = _tables(dom)["stats.parquet"]
    col = list(want.columns).index("mean_norm")
    got = [float(re.findall(r'<td[^>]*data-v="([^"]+)"|<td class="s"[^>]*>', r)[col] or "nan") for r in rows]
    assert got == pytest.approx(sorted(want.mean_norm.tolist()), rel=1e-12)
    dom, _ = render(chromium, f"file://{out}/report.html#hook=resid.1")
    for name, rows in _tables(dom).items():
        if name.startswith("summary: "):
            continue
        t = pq.read_table(out / name).to_pandas()
        if "hook" not in t.columns:
            continue
        visible = [r for r in rows if "hidden" not in r.split(">", 1)[0]]
        assert len(visible) == min(int((t.hook == "resid.1").sum()), len(rows)), name
        assert all('data-hook="resid.1"' in r for r in visible)
    assert '<a href="#hook=resid.1" data-hook="resid.1" class="on">' in dom


def test_the_page_is_rebuilt_the_same_and_an_empty_folder_is_refused(runs, tmp_path):
    out = runs["probe"]
    page = (out / "report.html").read_bytes()
    (out / "report.html").unlink()
    s = report(ReportConfig(out=str(out)))
    assert s.command == "probe" and (out / "report.html").read_bytes() == page
    with pytest.raises(ReportError, match="holds no run.json"):
        report(ReportConfig(out=str(tmp_path)))


def test_sae_train_page_shows_each_sae_and_provenance(runs):
    page = (runs["sae"] / "report.html").read_text()
    assert "training_curves.png" in page and "latent_frequency.png" in page
    assert "data-name='summary: saes'" in page and "x-topk-k4-x2" in page  # a row per SAE trained
    assert shards.open_dataset(str(runs["sae"].parent / "synth")).dataset_id in page
    assert np.isfinite(json.loads((runs["sae"] / "training_summary.json").read_text())["steps"])
