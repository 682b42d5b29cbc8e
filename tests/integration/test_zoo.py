"""A model zoo in one job (issue 28, item 2): ``extract --zoo`` writes one dataset per model; a driver killed
after the first model resumes without re-extracting it; ``align rsa --data 'ZOO/*'`` scores every model against
Net2Brain's IT fMRI RDMs in one table and plot, and ``align cka --data 'ZOO/*'`` compares every pair of models."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

import shards
from analysis.align.config import CkaConfig, RsaConfig
from analysis.align.pairs_run import run as cka
from analysis.align.rsa_run import run as rsa
from analysis.align.sweep import SweepError
from cluster.extract_command import cmd_extract
from cluster.zoo import load_zoo
from ingest.config import ExtractConfig
from shards.errors import ConfigError
from tests.model_factories import save_tiny_convnext, save_tiny_vit
from tests.ray_tmp import ray_tmpdir_for
from tests.shared_data import DATA

pytest.importorskip("efficientnet_lite_pytorch")
pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
STIMULI = DATA / "net2brain78" / "stimuli"
IT = DATA / "net2brain78" / "fmri_IT_RDMs.npz"


def _zoo_file(tmp: Path) -> Path:
    vit, convnext = save_tiny_vit(tmp / "vit"), save_tiny_convnext(tmp / "convnext")
    models = [
        {"name": "lite0-untrained", "model": "ingest.model_zoo.efficientnet_lite0:load_untrained",
         "hooks": "block.1*", "pool": "spatial_mean", "resize": "64", "crop": "64"},  # the command line wins
        {"name": "vit-random", "model": vit, "hooks": "resid.*", "pool": "cls"},
        {"name": "convnext-random", "model": convnext, "hooks": "stage.*", "pool": "spatial_mean"},
    ]
    path = tmp / "zoo.yaml"
    path.write_text(json.dumps({"models": models}))  # JSON is YAML
    return path


@pytest.fixture(scope="module")
def zoo(tmp_path_factory, request) -> Path:
    """The zoo extracted by a driver killed after its first model, then rerun to the end."""
    tmp = tmp_path_factory.mktemp("zoo")
    out = tmp / "zoo"
    cmd = [sys.executable, "-m", "cluster.cli", "extract", "--zoo", str(_zoo_file(tmp)), "--data", str(STIMULI),
           "--out", str(out), "--dtype", "float32", "--unit-size", "26", "--workers", "1", "--zoo-parallel", "2"]
    ray_tmp = ray_tmpdir_for(request)  # short (Ray's socket paths), removed after the module, pass or fail
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_TMPDIR": ray_tmp}
    with open(tmp / "driver.log", "w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, start_new_session=True, stdout=log, stderr=log)
        try:
            deadline = time.time() + 300
            while time.time() < deadline and proc.poll() is None and not (out / "zoo.json").exists():
                time.sleep(0.1)
            assert proc.poll() is None, "the zoo ended first: " + (tmp / "driver.log").read_text()[-3000:]
        finally:
            os.killpg(proc.pid, signal.SIGKILL)  # the driver and the local Ray it started
            proc.wait()
    # the models run side by side (two at a time on two cores): whichever finished first is recorded
    done = sorted(json.loads((out / "zoo.json").read_text()))
    first = shards.open_dataset(str(out / done[0]))
    (tmp / "first.json").write_text(json.dumps({"done": done, "version": first.version, "units": len(first.units)}))
    rerun = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
                           start_new_session=True)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    (tmp / "rerun.json").write_text(rerun.stdout.strip().splitlines()[-1])
    return out


def test_a_killed_zoo_resumes_without_re_extracting_finished_models(zoo):
    summary = json.loads((zoo.parent / "rerun.json").read_text())
    before = json.loads((zoo.parent / "first.json").read_text())
    names = ["lite0-untrained", "vit-random", "convnext-random"]
    assert summary["skipped"] == [n for n in names if n in before["done"]]
    assert summary["ran"] == [n for n in names if n not in before["done"]]  # in the zoo's order
    assert summary["parallel"] == 2  # --zoo-parallel 2: two models at a time
    first = shards.open_dataset(str(zoo / before["done"][0]))
    assert (first.version, len(first.units)) == (before["version"], before["units"])  # not written again
    for name, hooks in (("lite0-untrained", 7), ("vit-random", 2), ("convnext-random", 4)):
        ds = shards.open_dataset(str(zoo / name))
        assert shards.verify_dataset(str(zoo / name)).ok and ds.num_rows == 78 and len(ds.hooks) == hooks, name
        assert ds.metadata_table(["stimulus_id"]).column(0).to_pylist()[:2] == ["image_01", "image_02"]
    lite0 = shards.open_dataset(str(zoo / "lite0-untrained"))
    assert lite0.manifest.provenance.details["preprocessing"]["crop"] == 64  # --crop in the zoo over the default


def test_rsa_and_cka_sweep_the_zoo(zoo, tmp_path):
    s = rsa(RsaConfig(data=f"{zoo}/*", hooks=["*"], brain=[str(IT)], out=str(tmp_path / "rsa")))
    assert s.datasets == ["convnext-random", "lite0-untrained", "vit-random"]
    table = pq.read_table(tmp_path / "rsa" / "sweep.parquet").to_pandas()
    for name in s.datasets:  # every run's rows, tagged, and the best hook is its summary's best
        own = pq.read_table(tmp_path / "rsa" / name / "results.parquet").to_pandas()
        assert (table.dataset == name).sum() == len(own)
        per_hook = json.loads((tmp_path / "rsa" / name / "summary.json").read_text())["targets"]["fmri_IT_RDMs"]
        want = max(per_hook["hooks"], key=lambda h: per_hook["hooks"][h]["mean"])
        got = next(b for b in s.best if b["dataset"] == name)
        assert got["hook"] == want and got["score"] == pytest.approx(per_hook["hooks"][want]["mean"], rel=1e-12)
        hooks = list(dict.fromkeys(own.hook))
        assert got["depth"] == pytest.approx(hooks.index(want) / (len(hooks) - 1))
    assert (tmp_path / "rsa" / "sweep.png").stat().st_size > 10_000
    # issue 39, item 4: the runs write their results and records, the sweep one page linking every run
    page = (tmp_path / "rsa" / "report.html").read_text()
    for name in s.datasets:
        run_dir = tmp_path / "rsa" / name
        assert {"results.parquet", "summary.json", "run.json"} <= {p.name for p in run_dir.iterdir()}
        assert not list(run_dir.glob("*.png")) and not (run_dir / "report.html").exists()
        assert f"{name}/summary.json" in page and f"{name}/results.parquet" in page
    again = rsa(RsaConfig(data=f"{zoo}/*", hooks=["*"], brain=[str(IT)], out=str(tmp_path / "rsa"),
                          run_plots=True))  # finished runs are not redone for a setting of how they are shown
    assert again.best == s.best
    drawn = rsa(RsaConfig(data=f"{zoo}/vit*", hooks=["*"], brain=[str(IT)], out=str(tmp_path / "rsa-plots"),
                          run_plots=True))
    assert drawn.best == [b for b in s.best if b["dataset"] == "vit-random"]
    assert (tmp_path / "rsa-plots" / "vit-random" / "rsa_by_layer.png").stat().st_size > 10_000
    assert "vit-random/report.html" in (tmp_path / "rsa-plots" / "report.html").read_text()
    c = cka(CkaConfig(data=f"{zoo}/*", hooks=["*"], out=str(tmp_path / "cka")))
    assert c.runs == ["convnext-random__lite0-untrained", "convnext-random__vit-random", "lite0-untrained__vit-random"]
    pairs = pq.read_table(tmp_path / "cka" / "sweep.parquet").to_pandas()
    one = pairs[(pairs.dataset == "convnext-random") & (pairs.dataset2 == "vit-random")]
    assert len(one) == 4 * 2 and np.isfinite(one.score).all()  # stage.0-3 x resid.0-1
    with pytest.raises(SweepError, match="matches no dataset"):
        rsa(RsaConfig(data=f"{zoo}/nothing*", hooks=["*"], brain=[str(IT)], out=str(tmp_path / "x")))


def test_bad_zoo_files_fail_before_any_model_loads(tmp_path):
    cases = {"models: []": "expected `models:`",
             "models: [{name: a}]": "needs a `name`",
             "models: [{name: a, model: m, colour: red}]": r"unknown options \['colour'\]",
             "models: [{name: a, model: m}, {name: a, model: n}]": "used twice",
             "models: [{name: 'a/b', model: m}]": "needs a `name`"}
    for text, match in cases.items():
        (tmp_path / "z.yaml").write_text(text)
        with pytest.raises(ConfigError, match=match):
            load_zoo(ExtractConfig(zoo=str(tmp_path / "z.yaml"), out=str(tmp_path / "out")))
    with pytest.raises(ConfigError, match="no such file"):
        cmd_extract(ExtractConfig(zoo=str(tmp_path / "missing.yaml"), out=str(tmp_path / "out")))
    assert not (tmp_path / "out").exists()
