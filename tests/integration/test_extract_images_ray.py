"""Image extraction on a real local Ray: the real Net2Brain and Kriegeskorte stimuli through a random ViT,
rows in the brain RDMs' order; a killed actor; a rerun that resumes."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

import shards
from ingest.config import ExtractConfig
from ingest.driver import run_extraction
from ingest.models import load_model
from tests.integration.actor_kill import kill_an_actor_after
from tests.model_factories import save_tiny_vit
from tests.shared_data import DATA

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def vit_dir(tmp_path_factory):
    return save_tiny_vit(tmp_path_factory.mktemp("vit") / "vit")


def model_rows(model_dir: str, images: list, hook_index: int) -> torch.Tensor:
    """The CLS token of hidden state ``hook_index``, computed directly with transformers."""
    from transformers import AutoImageProcessor

    proc = AutoImageProcessor.from_pretrained(model_dir)
    model = load_model(model_dir, "float32", "cpu").model
    with torch.no_grad():
        px = proc(images=images, return_tensors="pt")["pixel_values"]
        return model(pixel_values=px, output_hidden_states=True).hidden_states[hook_index][:, 0]


def rdm(x: np.ndarray) -> np.ndarray:
    return 1 - np.corrcoef(x.astype(np.float64))


def test_net2brain_stimuli_rows_in_rdm_order(ray_local, tmp_path, vit_dir):
    out = str(tmp_path / "n2b")
    summary = run_extraction(ExtractConfig(model=vit_dir, data=str(DATA / "net2brain78" / "stimuli"),
                                           hooks="resid.1", dtype="float32", out=out, workers=2, unit_size=20))
    assert summary.modality == "image" and summary.count == 78 and summary.rows == 78
    assert summary.to_json()["images"] == 78
    ds = shards.open_dataset(out)
    ids = ds.metadata_table(["stimulus_id", "example_id"]).to_pydict()
    assert ids["stimulus_id"] == [f"image_{i:02d}" for i in range(1, 79)]  # image_01 -> row 0 ...
    assert ids["example_id"] == list(range(78))
    brain = np.load(DATA / "net2brain78" / "fmri_IT_RDMs.npz")["arr_0"]
    assert brain.shape[1:] == (78, 78)  # row/column i of the RDM is image i+1, as row i of the dataset
    imgs = [Image.open(DATA / "net2brain78" / "stimuli" / f"image_{i:02d}.jpg").convert("RGB") for i in range(1, 79)]
    ref = model_rows(vit_dir, imgs, 2).numpy()
    stored = ds.to_numpy("resid.1")
    np.testing.assert_allclose(stored, ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rdm(stored), rdm(ref), atol=1e-5)  # the model RDM lines up with the brain RDM
    assert ds.manifest.provenance.details["images"]["images"] == 78
    assert shards.verify_dataset(out).ok


def test_kriegeskorte_92_with_category_metadata(ray_local, tmp_path, vit_dir):
    mat_path = DATA / "kriegeskorte92" / "Kriegeskorte_Neuron2008_supplementalData.mat"
    out = str(tmp_path / "k92")
    run_extraction(ExtractConfig(model=vit_dir, data=str(mat_path), hooks="resid.0,resid.1", out=out, workers=1,
                                 unit_size=32, pool="mean"))
    ds = shards.open_dataset(out)
    meta = ds.metadata_table().to_pydict()
    mat = scipy.io.loadmat(str(mat_path))
    stim = mat["stimuli_92objs"].reshape(-1)
    assert meta["stimulus_id"] == [f"image_{i:02d}" for i in range(1, 93)]
    assert meta["face"] == [int(e["face"].reshape(-1)[0]) for e in stim]
    assert meta["category"][0] == str(stim[0]["category"].reshape(-1)[0])
    assert mat["RDMs_mIT_hIT_fig1"].reshape(-1)[1]["RDM"].size in (92 * 92, 92 * 91 // 2)
    from transformers import AutoImageProcessor

    proc = AutoImageProcessor.from_pretrained(vit_dir)
    model = load_model(vit_dir, "float32", "cpu").model
    picks = [0, 45, 91]
    with torch.no_grad():
        px = proc(images=[Image.fromarray(stim[i]["image"]) for i in picks], return_tensors="pt")["pixel_values"]
        hs = model(pixel_values=px, output_hidden_states=True).hidden_states
    got = ds.take(picks, dtype="float32")
    torch.testing.assert_close(got["resid.1"], hs[2][:, 1:].mean(1).half().float(), rtol=2e-3, atol=2e-3)


def test_killed_actor_then_rerun_resumes(ray_local, tmp_path, caplog, vit_dir):
    from shards.storage import Storage

    caplog.set_level(logging.WARNING, logger="actlake")
    out = str(tmp_path / "k")
    mat_path = DATA / "kriegeskorte92" / "Kriegeskorte_Neuron2008_supplementalData.mat"
    cfg = ExtractConfig(model=vit_dir, data=str(mat_path), hooks="resid.*", out=out, workers=2, unit_size=2,
                        batch_size=1)
    with kill_an_actor_after(Storage(out), commits=3) as killed:  # a real SIGKILL of a live actor
        summary = run_extraction(cfg)
    assert killed, "no actor was killed"
    assert "actor died while running unit" in caplog.text
    assert summary.ran_units == 46
    ds = shards.open_dataset(out)
    ids = ds.metadata_table(["example_id"]).column("example_id").to_pylist()
    assert sorted(ids) == list(range(92))  # every image exactly once
    assert shards.verify_dataset(out).ok
    again = run_extraction(cfg)  # rerunning the same command skips every committed unit
    assert again.skipped_units == 46 and again.ran_units == 0 and again.rows == 92


def test_bad_image_fails_naming_it_or_is_skipped_and_listed(ray_local, tmp_path, vit_dir):
    from ingest.image_sources import ImageDecodeError

    stim = tmp_path / "stim"
    stim.mkdir()
    for i in range(6):
        Image.new("RGB", (40, 40), (40 * i, 0, 0)).save(stim / f"s{i}.png")
    (stim / "s3.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(ImageDecodeError, match="'s3'"):
        run_extraction(ExtractConfig(model=vit_dir, data=str(stim), hooks="resid.0", out=str(tmp_path / "a"),
                                     unit_size=2))
    summary = run_extraction(ExtractConfig(model=vit_dir, data=str(stim), hooks="resid.0", out=str(tmp_path / "b"),
                                           unit_size=2, on_bad_image="skip"))
    assert summary.rows == 5 and summary.skipped_inputs == ["s3"]
    ds = shards.open_dataset(str(tmp_path / "b"))
    assert ds.metadata_table(["stimulus_id"]).column("stimulus_id").to_pylist() == ["s0", "s1", "s2", "s4", "s5"]
    assert [(s.stimulus_id, s.example_id) for s in ds.manifest.skipped_inputs()] == [("s3", 3)]


def test_job_file_on_the_cli_with_images_read_from_s3(ray_local, tmp_path, vit_dir, s3_bucket, s3_endpoint):
    """Images in an S3 bucket (any fsspec URI), a YAML job file, modality detected from the model."""
    import fsspec

    from cluster.cli import main

    fs = fsspec.filesystem("s3", endpoint_url=s3_endpoint)
    files = sorted((DATA / "net2brain78" / "stimuli").glob("image_0[1-5].jpg"))
    for f in files:
        fs.pipe(f"{s3_bucket[5:]}/stim/{f.name}", f.read_bytes())
    job = tmp_path / "job.yaml"
    out = f"{s3_bucket}/acts/vit"
    job.write_text(f"model: {vit_dir}\ndata: {s3_bucket}/stim\nhooks: resid.1\nunit_size: 2\nout: {out}\n"
                   f"endpoint_url: {s3_endpoint}\ndtype: float32\n")
    assert main(["extract", "--config", str(job), "--pool", "mean"]) == 0
    ds = shards.open_dataset(out, {"endpoint_url": s3_endpoint})
    assert ds.manifest.config["modality"] == "image" and ds.manifest.config["pool"] == "mean"
    assert ds.metadata_table(["stimulus_id"]).column("stimulus_id").to_pylist() == [f.stem for f in files]
    imgs = [Image.open(f).convert("RGB") for f in files]
    from transformers import AutoImageProcessor

    px = AutoImageProcessor.from_pretrained(vit_dir)(images=imgs, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        hs = load_model(vit_dir, "float32", "cpu").model(pixel_values=px, output_hidden_states=True).hidden_states
    np.testing.assert_allclose(ds.to_numpy("resid.1"), hs[2][:, 1:].mean(1).numpy(), rtol=1e-5, atol=1e-6)
