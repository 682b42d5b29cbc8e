"""Import of features computed elsewhere: Net2Brain's real ResNet-18 features, thingsvision and Parquet."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

import shards
from cluster.cli import main
from ingest.imports import ImportConfig, import_features
from tests.shared_data import DATA

N2B = DATA / "net2brain78" / "resnet18_layer3.1.conv2"


def test_net2brain_resnet18_features_bytes_equal(tmp_path):
    out = tmp_path / "n2b"
    assert main(["import", str(N2B), "--layout", "net2brain", "--out", str(out), "--unit-size", "32"]) == 0
    ds = shards.open_dataset(str(out))
    assert ds.num_rows == 78 and len(ds.units) == 3
    assert ds.hooks == ["layer3.1.conv2", "layer4.1.bn2"]
    assert ds.hook_spec("layer3.1.conv2").shape == (256, 14, 14) and ds.hook_spec("layer4.1.bn2").shape == (512, 7, 7)
    meta = ds.metadata_table().to_pydict()
    assert meta["stimulus_id"] == [f"ResNet18_image_{i:02d}" for i in range(1, 79)]
    for hook in ds.hooks:
        stored = ds.to_numpy(hook)
        assert stored.dtype == np.float32  # the source's dtype
        for i in range(78):
            src = np.load(N2B / f"ResNet18_image_{i + 1:02d}.npz")[hook]
            assert stored[i].tobytes() == src.tobytes()
        # statistics against numpy on the same rows
        flat = stored.reshape(78, -1).astype(np.float64)
        st = ds.stats(hook)
        assert st.count == 78
        np.testing.assert_allclose(st.mean, flat.mean(0), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(st.var, flat.var(0), rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(st.mean_norm, np.linalg.norm(flat, axis=1).mean(), rtol=1e-5)
    prov = ds.manifest.provenance.details["import"]
    assert prov["layout"] == "net2brain" and prov["original_layers"]["layer3.1.conv2"]["shape"] == [256, 14, 14]
    assert shards.verify_dataset(str(out)).ok


def test_net2brain_image_ids_and_dtype_override(tmp_path):
    summary = import_features(ImportConfig(src=str(N2B), layout="net2brain", out=str(tmp_path / "o"),
                                           stimulus_id="image", dtype="float16", hooks="layer4.1.bn2"))
    assert summary.rows == 78 and summary.hooks == ["layer4.1.bn2"]
    ds = shards.open_dataset(str(tmp_path / "o"))
    assert ds.metadata_table().column("stimulus_id").to_pylist()[:2] == ["image_01", "image_02"]
    src = np.load(N2B / "ResNet18_image_02.npz")["layer4.1.bn2"].reshape(-1)
    assert ds.to_numpy("layer4.1.bn2")[1].reshape(-1).tobytes() == src.astype(np.float16).tobytes()


def test_thingsvision_layout_npy_pt_and_folders(tmp_path):
    rng = np.random.default_rng(0)
    fc = rng.standard_normal((7, 10)).astype(np.float32)
    conv = rng.standard_normal((7, 4, 3, 3)).astype(np.float16)
    emb = torch.randn(7, 6, dtype=torch.bfloat16)
    np.save(tmp_path / "fc.npy", fc)
    (tmp_path / "features.conv1").mkdir()
    np.save(tmp_path / "features.conv1" / "features.npy", conv)
    torch.save(emb, tmp_path / "emb.pt")
    (tmp_path / "file_names.txt").write_text("\n".join(f"images/cat/img_{i}.jpg" for i in range(7)) + "\n")
    import_features(ImportConfig(src=str(tmp_path), layout="thingsvision", out=str(tmp_path / "out"), unit_size=3))
    ds = shards.open_dataset(str(tmp_path / "out"))
    assert ds.num_rows == 7 and sorted(ds.hooks) == ["emb", "fc", "features.conv1"]
    assert ds.metadata_table().column("stimulus_id").to_pylist() == [f"img_{i}" for i in range(7)]
    assert ds.to_numpy("fc").tobytes() == fc.tobytes()
    assert ds.hook_spec("features.conv1").dtype == "float16"
    assert ds.to_numpy("features.conv1").tobytes() == conv.tobytes()
    assert ds.hook_spec("emb").dtype == "bfloat16"
    got = next(iter(ds.iter_batches(["emb"], batch_size=7, dtype=None)))["emb"]
    assert torch.equal(got.view(torch.int16), emb.view(torch.int16))


def test_parquet_layout_list_columns(tmp_path):
    feats = np.arange(12, dtype=np.float32).reshape(4, 3)
    table = pa.table({"stimulus_id": ["d", "c", "b", "a"], "layer": list(feats), "subject": [1, 1, 2, 2]})
    pq.write_table(table, tmp_path / "f.parquet")
    import_features(ImportConfig(src=str(tmp_path / "f.parquet"), layout="parquet", out=str(tmp_path / "o")))
    ds = shards.open_dataset(str(tmp_path / "o"))
    meta = ds.metadata_table().to_pydict()
    assert meta["stimulus_id"] == ["d", "c", "b", "a"] and meta["subject"] == [1, 1, 2, 2]  # the table's order
    assert ds.to_numpy("layer").tobytes() == feats.tobytes()


def test_failed_import_leaves_nothing_and_keeps_user_files(tmp_path, monkeypatch):
    """Issue 9, item 15: an import is all or nothing. The failure after the first committed unit is injected
    (a source that breaks half-way cannot be made from the real Net2Brain files); the user's own file under
    --out stays, and nothing that could pass `verify` as a complete dataset is left."""
    import ingest.imports.run as run

    out = tmp_path / "out"
    (out / "data").mkdir(parents=True)
    (out / "data" / "notes.csv").write_text("mine")
    real, calls = run._unit_columns, []

    def breaks_on_second(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise OSError("source file vanished")
        return real(*a, **k)

    monkeypatch.setattr(run, "_unit_columns", breaks_on_second)
    with pytest.raises(OSError, match="vanished"):
        import_features(ImportConfig(src=str(N2B), layout="net2brain", out=str(out), unit_size=32))
    left = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert left == ["data/notes.csv"]
