"""Alignment on a real local Ray: a random ViT extracted over the 78 Net2Brain stimuli through Ray, then RSA of
every hook against the 15 subjects' fMRI RDMs as Ray tasks (one per hook) reading the dataset from S3 and
writing there, equal to one local process; a rerun skips the finished hooks."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
import s3fs

from analysis.align import compare, rdm
from analysis.align.config import RsaConfig
from analysis.align.rsa_run import run as rsa
from ingest.config import ExtractConfig
from ingest.driver import run_extraction
from shards.reader import open_dataset
from tests.model_factories import save_tiny_vit
from tests.shared_data import DATA

pytestmark = pytest.mark.integration
BRAIN = [str(DATA / "net2brain78" / "fmri_IT_RDMs.npz"), str(DATA / "net2brain78" / "fmri_EVC_RDMs.npz")]


def test_images_through_ray_then_rsa_tasks_on_s3(ray_local, tmp_path, s3_bucket, s3_endpoint):
    vit = save_tiny_vit(tmp_path / "vit")
    data = f"{s3_bucket}/vit78"
    opts = {"endpoint_url": s3_endpoint}
    run_extraction(ExtractConfig(model=vit, data=str(DATA / "net2brain78" / "stimuli"), hooks="embed,resid.*",
                                 dtype="float32", out=data, workers=2, unit_size=20, pool="cls",
                                 storage=dict(endpoint_url=s3_endpoint)))
    # not `embed`: pooled at the CLS token it is the CLS embedding plus position 0's, the same for every image (a
    # constant RDM, which RSA refuses)
    cfg = dict(data=data, hooks=["resid.*"], brain=BRAIN, noise_ceiling=True, bootstrap=30,
               permutations=20, storage=opts)
    remote = rsa(RsaConfig(**cfg, workers=2, out=f"{s3_bucket}/rsa"))
    local = rsa(RsaConfig(**cfg, out=str(tmp_path / "rsa")))
    assert remote.targets == local.targets  # same numbers from Ray tasks on S3 and one local process
    # independent check of one score: the stored rows' RDM against subject 0's IT RDM
    ds = open_dataset(data, opts)
    x = ds.to_numpy("resid.1").reshape(78, -1)
    it = np.load(BRAIN[0])["arr_0"]
    expected = np.mean(compare(rdm(x), it, "spearman"))
    assert remote.targets["fmri_IT_RDMs"]["hooks"]["resid.1"]["mean"] == pytest.approx(expected, abs=1e-12)
    fs = s3fs.S3FileSystem(client_kwargs=opts)
    assert fs.exists(f"{s3_bucket}/rsa/results.parquet") and fs.exists(f"{s3_bucket}/rsa/rsa_by_layer.png")
    t = pq.read_table(tmp_path / "rsa" / "results.parquet").to_pandas()
    hooks = len(remote.hooks)
    assert len(t) == hooks * 2 * 16
    # a rerun after losing one hook's result recomputes only that hook
    (tmp_path / "rsa" / "summary.json").unlink()
    (tmp_path / "rsa" / "hooks" / "resid.0.json").unlink()
    again = rsa(RsaConfig(**cfg, out=str(tmp_path / "rsa")))
    assert again.targets == local.targets
