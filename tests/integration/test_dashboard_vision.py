"""`actlake sae dashboard` over image rows (issue 27): a ViT's patch rows over Net2Brain's 78 stimuli. A latent
page shows the images whose best patch activates the latent most (against an independent encoding), each as the
thumbnail of that stimulus (pixels against the stimulus file), with the latent's activation per patch as a heat
map; an imported dataset without an image source needs --images."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
import torch
from PIL import Image

import shards
from analysis.sae.dashboard.run import DashboardError, SaeDashboardConfig
from analysis.sae.dashboard.views import thumbnail_jpeg
from analysis.sae.io import save_sae
from analysis.sae.registry import create_sae
from cluster.dashboard_command import cmd_dashboard
from cluster.extract_command import cmd_extract
from ingest.config import ExtractConfig
from ingest.imports import ImportConfig, import_features
from tests.browser import ARTIFACTS, render
from tests.model_factories import save_tiny_vit
from tests.shared_data import DATA

pytestmark = pytest.mark.integration
STIMULI = DATA / "net2brain78" / "stimuli"


@pytest.fixture(scope="module")
def site(ray_local, tmp_path_factory):
    root = tmp_path_factory.mktemp("vdash")
    vit = save_tiny_vit(root / "vit")
    ds = str(root / "patches")
    cmd_extract(ExtractConfig(model=vit, data=str(STIMULI), hooks=["resid.1"], dtype="float32", pool="none",
                              out=ds, workers=1, unit_size=26))
    sae = create_sae("topk", d_in=32, d_sae=40, k=4, seed=3)
    with torch.no_grad():
        sae.b_dec.copy_(torch.as_tensor(shards.open_dataset(ds).stats("resid.1").mean).float())
    save_sae(sae, str(root / "sae"), {"hook": "resid.1", "dataset": ds})
    summary = cmd_dashboard(SaeDashboardConfig(sae=str(root / "sae"), out=str(root / "site"), top=6))
    return root, summary, sae, ds


def test_top_stimuli_thumbnails_and_patch_heat_maps(site, chromium):
    root, summary, sae, ds = site
    d = shards.open_dataset(ds)
    meta = d.metadata_table(["example_id", "stimulus_id", "patch_row", "patch_col"]).to_pandas()
    with torch.no_grad():
        z = sae.encode(d.take(np.arange(d.num_rows), dtype="float32")["resid.1"]).numpy()
    patch = (meta.patch_row >= 0).to_numpy()
    assert summary.rows == d.num_rows == 78 * 17 and patch.sum() == 78 * 16  # CLS + a 4 x 4 grid per image
    lat = int((z > 0).sum(0).argmax())
    best = meta.assign(a=z[:, lat]).groupby("stimulus_id").a.max().sort_values(ascending=False)
    dom, log = render(chromium, f"file://{root}/site/latent.html?l={lat}", ARTIFACTS / "dashboard-vision.png")
    assert "Uncaught" not in log and "ERR_FILE_NOT_FOUND" not in log
    top = dom.split('id="top"', 1)[1].split("</div><h2>", 1)[0]
    shown = re.findall(r'<figure class="stim" data-stimulus="([^"]+)" data-act="([^"]+)">'
                       r'<div class="thumb"><img src="thumbs/(\d+).jpg"', top)
    assert [s for s, _, _ in shown] == list(best.index[:6])  # each image once, by its most active row
    for sid, act, example in shown:
        assert float(act) == pytest.approx(float(best[sid]), rel=1e-4)
        assert int(example) == int(sid.split("_")[1]) - 1  # image_01 is example 0
        got = np.asarray(Image.open(io.BytesIO((root / "site" / "thumbs" / f"{example}.jpg").read_bytes())))
        want = np.asarray(Image.open(io.BytesIO(thumbnail_jpeg(Image.open(STIMULI / f"{sid}.jpg").convert("RGB")))))
        other = np.asarray(Image.open(io.BytesIO(thumbnail_jpeg(Image.open(STIMULI / "image_40.jpg").convert("RGB")))))
        assert np.abs(got.astype(int) - want).mean() < 1.0 < np.abs(got.astype(int) - other).mean() or sid == "image_40"
    first = top.split("</figure>", 1)[0]
    assert 'data-rows="4" data-cols="4"' in first
    cells = [float(v) for v in re.findall(r"<title>([^<]+)</title>", first)]
    rows = meta[(meta.stimulus_id == shown[0][0]) & patch].sort_values(["patch_row", "patch_col"]).index
    np.testing.assert_allclose(cells, z[rows, lat], rtol=1e-3, atol=1e-6)  # the heat map is the patch grid
    index, _ = render(chromium, f"file://{root}/site/index.html?q={shown[0][0]}")
    assert "top stimuli" in index and f'latent.html?l={lat}"' in index


def test_an_imported_dataset_needs_images_and_a_wrong_source_is_named(ray_local, tmp_path):
    out = str(tmp_path / "resnet18")
    import_features(ImportConfig(src=str(DATA / "net2brain78" / "resnet18_layer3.1.conv2"), layout="net2brain",
                                 stimulus_id="image", out=out))
    d = shards.open_dataset(out)
    hook = d.hooks[0]
    save_sae(create_sae("topk", d_in=d.hook_spec(hook).numel, d_sae=16, k=2), str(tmp_path / "sae"),
             {"hook": hook, "dataset": out})
    cfg = dict(sae=str(tmp_path / "sae"), out=str(tmp_path / "site"), top=3)
    with pytest.raises(DashboardError, match="records no image source.*--images"):
        cmd_dashboard(SaeDashboardConfig(**cfg))
    (tmp_path / "other").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "other" / "zzz.png")
    with pytest.raises(DashboardError, match="cannot be read from"):
        cmd_dashboard(SaeDashboardConfig(**cfg, images=str(tmp_path / "other")))
    assert not (tmp_path / "site").exists()
    s = cmd_dashboard(SaeDashboardConfig(**cfg, images=str(STIMULI)))
    assert s.rows == 78 and len(list((tmp_path / "site" / "thumbs").glob("*.jpg"))) >= 3
