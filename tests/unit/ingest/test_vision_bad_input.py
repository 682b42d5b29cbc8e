"""Bad image-job and import input: clear errors naming the problem, before any data is written."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from ingest.config import ExtractConfig
from ingest.image_sources import ImageDecodeError
from ingest.imports import ImportConfig, import_features
from ingest.imports.source import FeatureImportError
from ingest.modalities.image import ImageModality
from ingest.models import load_model
from ingest.plan import WorkUnit
from ingest.preprocess import PreprocessError
from ingest.vision import PoolError
from tests.model_factories import save_tiny_resnet, save_tiny_vit


@pytest.fixture(scope="module")
def resnet(tmp_path_factory):
    return save_tiny_resnet(tmp_path_factory.mktemp("m") / "resnet")


@pytest.fixture(scope="module")
def vit(tmp_path_factory):
    return save_tiny_vit(tmp_path_factory.mktemp("m") / "vit")


def job(model_dir, data, **kw) -> ImageModality:
    """An actor's image runner, built from the driver's plan as on Ray."""
    cfg = ExtractConfig(model=model_dir, data=str(data), modality="image", batch_size=8, **kw)
    loaded = load_model(model_dir, "float32", "cpu")
    return ImageModality(ImageModality.plan(cfg, loaded), loaded)


def test_unreadable_image_fails_naming_it_or_is_skipped(tmp_path, vit):
    for i in range(3):
        Image.new("RGB", (40, 40), (i * 50, 0, 0)).save(tmp_path / f"img{i}.png")
    (tmp_path / "img1.png").write_bytes(b"not an image at all")
    j = job(vit, tmp_path, hooks="resid.0")
    with pytest.raises(ImageDecodeError, match="'img1'"):
        j.prepare(WorkUnit(0, 0, 3))
    j = job(vit, tmp_path, hooks="resid.0", on_bad_image="skip")
    prepared = j.prepare(WorkUnit(0, 0, 3))
    assert prepared.kept == [0, 2] and [s.stimulus_id for s in prepared.skipped] == ["img1"]
    rows = j.forward(prepared)
    assert rows.columns["stimulus_id"].tolist() == ["img0", "img2"] and rows.count == 2
    assert [(s.stimulus_id, s.example_id) for s in rows.skipped] == [("img1", 1)]


def test_mixed_sizes_without_resize_name_the_images(tmp_path, resnet):
    Image.new("RGB", (40, 40)).save(tmp_path / "a.png")
    Image.new("RGB", (40, 40)).save(tmp_path / "b.png")
    Image.new("RGB", (48, 40)).save(tmp_path / "c.png")
    j = job(resnet, tmp_path, hooks="stage.0")  # a ResNet config has no image_size: no resize by default
    with pytest.raises(PreprocessError, match=r"\['c'\].*--resize"):
        j.prepare(WorkUnit(0, 0, 3))
    j = job(resnet, tmp_path, hooks="stage.0", resize="32")
    assert j.prepare(WorkUnit(0, 0, 3)).batches[0].shape == (3, 3, 32, 32)


def test_pool_that_does_not_fit_the_hook(tmp_path, resnet, vit):
    Image.new("RGB", (32, 32)).save(tmp_path / "a.png")
    with pytest.raises(PoolError, match="pool 'cls' needs token outputs.*stage.1"):
        job(resnet, tmp_path, hooks="stage.1", pool="cls")
    with pytest.raises(PoolError, match="same number of positions"):
        job(resnet, tmp_path, hooks="stage.0,stage.3", pool="none")
    with pytest.raises(PoolError, match="matches none of the hooks"):
        job(vit, tmp_path, hooks="resid.0", pool="stage.*=flatten")


def test_unknown_vision_hook_lists_aliases(tmp_path, resnet):
    from shards.errors import UnknownHookError

    Image.new("RGB", (32, 32)).save(tmp_path / "a.png")
    with pytest.raises(UnknownHookError, match=r"stage.0-3"):
        job(resnet, tmp_path, hooks="stage.9")


def test_import_mismatched_id_list_length(tmp_path):
    np.save(tmp_path / "fc.npy", np.zeros((5, 4), np.float32))
    (tmp_path / "file_names.txt").write_text("\n".join(f"img{i}.jpg" for i in range(4)))
    with pytest.raises(FeatureImportError, match="5 rows but the id list .* has 4 entries"):
        import_features(ImportConfig(src=str(tmp_path), layout="thingsvision", out=str(tmp_path / "out")))
    assert not (tmp_path / "out").exists()


def test_import_unknown_layout_and_float64(tmp_path):
    with pytest.raises(FeatureImportError, match="unknown layout 'thingvision'.*Did you mean 'thingsvision'"):
        import_features(ImportConfig(src=str(tmp_path), layout="thingvision", out=str(tmp_path / "o")))
    np.save(tmp_path / "fc.npy", np.zeros((2, 4)))
    (tmp_path / "file_names.txt").write_text("a.jpg\nb.jpg\n")
    with pytest.raises(FeatureImportError, match="float64.*--dtype float32"):
        import_features(ImportConfig(src=str(tmp_path), layout="thingsvision", out=str(tmp_path / "o")))


def test_import_truncated_npz_names_the_file(tmp_path):
    buf = io.BytesIO()
    np.savez(buf, **{"fc": np.zeros((1, 4), np.float32)})
    (tmp_path / "M_a.npz").write_bytes(buf.getvalue())
    np.savez(tmp_path / "M_b.npz", fc=np.zeros((1, 5), np.float32))
    with pytest.raises(FeatureImportError, match="M_b.npz: layer 'fc' has shape"):
        import_features(ImportConfig(src=str(tmp_path), layout="net2brain", out=str(tmp_path / "o")))
    assert not (tmp_path / "o").exists()  # the failed import left nothing behind to block a rerun
