"""Image sources: order, ids and metadata from folders, tables, HF datasets, .npz and the Kriegeskorte .mat."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import scipy.io
from PIL import Image

from ingest.image_sources import ImageDecodeError, ImageSourceError, is_image_source, load_image_source
from tests.shared_data import DATA

STIMULI = DATA / "net2brain78" / "stimuli"
KRIEGESKORTE = DATA / "kriegeskorte92" / "Kriegeskorte_Neuron2008_supplementalData.mat"


def test_folder_order_and_ids_follow_file_names():
    src = load_image_source(str(STIMULI))
    assert len(src) == 78
    assert src.ids == [f"image_{i:02d}" for i in range(1, 79)]
    ref = np.asarray(Image.open(STIMULI / "image_05.jpg").convert("RGB"))
    assert np.array_equal(np.asarray(src.image(4)), ref)
    assert is_image_source(str(STIMULI))


def test_folder_sidecar_metadata_joins_by_file_name(tmp_path):
    for i, color in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255)]):
        Image.new("RGB", (8, 8), color).save(tmp_path / f"s{i}.png")
    (tmp_path / "metadata.csv").write_text("file,category,rank\ns2.png,blue,3\ns0.png,red,1\ns1.png,green,2\n")
    src = load_image_source(str(tmp_path))
    assert src.ids == ["s0", "s1", "s2"]
    assert src.metadata == {"category": ["red", "green", "blue"], "rank": [1, 2, 3]}
    assert src.image(2).getpixel((0, 0)) == (0, 0, 255)


def test_kriegeskorte_mat_struct_array_with_category_flags():
    src = load_image_source(str(KRIEGESKORTE))
    mat = scipy.io.loadmat(str(KRIEGESKORTE))["stimuli_92objs"].reshape(-1)
    assert len(src) == 92 and src.ids[0] == "image_01" and src.ids[-1] == "image_92"
    for i in (0, 47, 91):
        assert np.array_equal(np.asarray(src.image(i)), mat[i]["image"])
    for flag in ("human", "face", "animal", "natural"):
        assert src.metadata[flag] == [int(e[flag].reshape(-1)[0]) for e in mat]
    assert sum(src.metadata["face"]) == 24 and sum(src.metadata["animal"]) == 48  # the paper's categories


def test_table_with_paths_and_with_bytes(tmp_path):
    files = sorted(STIMULI.glob("image_0[1-3].jpg"))
    (tmp_path / "imgs").mkdir()
    for f in files:
        (tmp_path / "imgs" / f.name).write_bytes(f.read_bytes())
    pq.write_table(pa.table({"path": [f"imgs/{f.name}" for f in files], "label": ["x", "y", "z"]}),
                   tmp_path / "by_path.parquet")
    src = load_image_source(str(tmp_path / "by_path.parquet"))
    assert src.ids == ["image_01", "image_02", "image_03"] and src.metadata == {"label": ["x", "y", "z"]}
    pq.write_table(pa.table({"stimulus_id": ["a", "b", "c"], "image": [f.read_bytes() for f in files]}),
                   tmp_path / "by_bytes.parquet")
    src2 = load_image_source(str(tmp_path / "by_bytes.parquet"))
    assert src2.ids == ["a", "b", "c"]
    assert np.array_equal(np.asarray(src2.image(1)), np.asarray(src.image(1)))


def test_hf_dataset_with_image_column(tmp_path):
    import datasets

    files = sorted(STIMULI.glob("image_0[1-4].jpg"))
    ds = datasets.Dataset.from_dict({"img": [str(f) for f in files], "label": [0, 1, 0, 1]}).cast_column(
        "img", datasets.Image())
    ds.save_to_disk(str(tmp_path / "hf"))
    assert is_image_source(str(tmp_path / "hf"))
    src = load_image_source(str(tmp_path / "hf"))
    assert src.ids == ["image_01", "image_02", "image_03", "image_04"]
    assert src.metadata == {"label": [0, 1, 0, 1]}
    assert np.array_equal(np.asarray(src.image(3)), np.asarray(Image.open(files[3]).convert("RGB")))


def test_npz_channels_first_array(tmp_path):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (5, 3, 12, 10), dtype=np.uint8)
    np.savez(tmp_path / "stim.npz", images=imgs, label=np.arange(5))
    src = load_image_source(str(tmp_path / "stim.npz"))
    assert src.ids == [f"image_{i:02d}" for i in range(1, 6)] and src.metadata == {"label": [0, 1, 2, 3, 4]}
    assert np.array_equal(np.asarray(src.image(2)), imgs[2].transpose(1, 2, 0))


def test_broken_image_is_named(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "good.png")
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 20, 30)).save(buf, "JPEG")
    (tmp_path / "truncated.jpg").write_bytes(buf.getvalue()[:200])
    src = load_image_source(str(tmp_path))
    with pytest.raises(ImageDecodeError, match="'truncated'.*--on-bad-image skip"):
        src.image(1)


def test_unknown_image_column_lists_columns(tmp_path):
    pq.write_table(pa.table({"img_path": ["a.png"], "label": [1]}), tmp_path / "t.parquet")
    with pytest.raises(ImageSourceError, match=r"image column 'image_file' not in .*Did you mean 'img_path'"):
        load_image_source(str(tmp_path / "t.parquet"), image_field="image_file")
    pq.write_table(pa.table({"pic": ["a.png"]}), tmp_path / "u.parquet")
    with pytest.raises(ImageSourceError, match="no image column found.*--image-field"):
        load_image_source(str(tmp_path / "u.parquet"))


def test_missing_source_says_where_it_looked(tmp_path):
    with pytest.raises(ImageSourceError, match="not found"):
        load_image_source(str(tmp_path / "nowhere"))


def test_an_image_named_by_path_is_read_through_storage(tmp_path, monkeypatch):
    """An image a table names by path or URI is read through ``Storage``: a dropped connection is retried, not
    reported as a bad image (it once went through a raw ``fsspec.open``)."""
    from fsspec.implementations.local import LocalFileSystem

    import shards.retry
    from ingest.image_sources.base import ImageSource

    Image.new("RGB", (4, 4), (10, 20, 30)).save(tmp_path / "a.png")
    real, calls = LocalFileSystem._open, []

    def drops_once(self, path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 1:
            raise ConnectionResetError("connection reset by peer")
        return real(self, path, *args, **kwargs)

    monkeypatch.setattr(LocalFileSystem, "_open", drops_once)
    monkeypatch.setattr(shards.retry.time, "sleep", lambda _s: None)
    src = ImageSource(str(tmp_path), "table", ["a"], [str(tmp_path / "a.png")])
    assert src.image(0).getpixel((0, 0)) == (10, 20, 30)
    assert len(calls) == 2
