"""Stored image activations equal the model's own outputs (hidden states) for the same preprocessed pixels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ingest.config import ExtractConfig
from ingest.modalities.image import ImageModality
from ingest.models import load_model
from ingest.plan import WorkUnit
from ingest.preprocess import build_preprocessor
from tests.model_factories import (
    save_tiny_clip_vision,
    save_tiny_convnext,
    save_tiny_dinov2,
    save_tiny_resnet,
    save_tiny_vit,
)
from tests.shared_data import DATA

STIMULI = DATA / "net2brain78" / "stimuli"


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    d = tmp_path_factory.mktemp("vision-models")
    return {"vit": save_tiny_vit(d / "vit"), "resnet": save_tiny_resnet(d / "resnet"),
            "convnext": save_tiny_convnext(d / "convnext"),
            "dinov2": save_tiny_dinov2(d / "dinov2"), "clip": save_tiny_clip_vision(d / "clip")}


def run_job(model_dir: str, hooks: str, pool: str = "auto", n: int = 6, start: int = 0, dtype="float32", **kw):
    """One unit through the driver's plan and an actor's runner, as on Ray; (columns, pixels, model, plan)."""
    cfg = ExtractConfig(model=model_dir, data=str(STIMULI), hooks=hooks, pool=pool, dtype=dtype,
                        batch_size=4, modality="image", **kw)
    loaded = load_model(model_dir, "float32", "cpu")
    plan = ImageModality.plan(cfg, loaded)
    runner = ImageModality(plan, loaded)
    prepared = runner.prepare(WorkUnit(0, start, start + n))
    assert prepared.kept == list(range(start, start + n)) and prepared.skipped == []
    return runner.forward(prepared).columns, torch.cat(prepared.batches), loaded.model, plan


def hidden_states(model, pixels):
    with torch.no_grad():
        return model(pixel_values=pixels, output_hidden_states=True).hidden_states


def test_vit_pools_equal_hidden_states(model_dirs):
    cols, px, model, job = run_job(model_dirs["vit"], "embed,resid.*", pool="resid.0=mean,resid.1=flatten")
    hs = hidden_states(model, px)
    assert px.shape == (6, 3, 32, 32)  # the model directory's processor resized 400x400 -> 32x32
    assert job.inputs.pools == {"embed": "cls", "resid.0": "mean", "resid.1": "flatten"}
    torch.testing.assert_close(cols["embed"], hs[0][:, 0])
    torch.testing.assert_close(cols["resid.0"], hs[1][:, 1:].mean(1))  # mean over the 16 patch tokens, CLS out
    torch.testing.assert_close(cols["resid.1"], hs[2].reshape(6, -1))
    assert job.inputs.stored_shapes["resid.1"] == [17, 32] and job.hook_specs["resid.1"].shape == (17, 32)
    assert cols["stimulus_id"].tolist() == [f"image_{i:02d}" for i in range(1, 7)]
    assert cols["example_id"].tolist() == list(range(6))


def test_vit_patch_rows_carry_grid_positions(model_dirs):
    cols, px, model, _ = run_job(model_dirs["vit"], "resid.*", pool="none", n=3)
    hs = hidden_states(model, px)
    for layer in range(2):
        torch.testing.assert_close(cols[f"resid.{layer}"].reshape(3, 17, 32), hs[layer + 1])
    assert cols["position"].tolist() == list(range(17)) * 3
    assert cols["patch_row"][:17].tolist() == [-1] + [t // 4 for t in range(16)]  # 32 px / patch 8 = 4x4 grid
    assert cols["patch_col"][:17].tolist() == [-1] + [t % 4 for t in range(16)]
    assert cols["example_id"].tolist() == [0] * 17 + [1] * 17 + [2] * 17


def test_vit_processor_pixels_equal_explicit_pipeline(model_dirs):
    """The model's HF processor and our explicit pipeline agree on square images (an independent check)."""
    from PIL import Image
    from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil

    imgs = [Image.open(STIMULI / f"image_0{i}.jpg").convert("RGB") for i in (1, 2)]
    ref = ViTImageProcessorPil.from_pretrained(model_dirs["vit"])(imgs, return_tensors="pt")["pixel_values"]
    pre = build_preprocessor(None, "explicit", resize="32", crop="32", mean=[0.5] * 3, std=[0.5] * 3,
                             resample="bilinear")
    torch.testing.assert_close(pre(imgs, ["a", "b"]), ref, rtol=0, atol=1e-5)


@pytest.mark.parametrize("arch", ["resnet", "convnext"])
def test_cnn_stages_equal_hidden_states(model_dirs, arch):
    cols, px, model, job = run_job(model_dirs[arch], "embed,stage.*", pool="stage.3=flatten", resize="64")
    hs = hidden_states(model, px)
    assert px.shape == (6, 3, 64, 64)
    torch.testing.assert_close(cols["embed"], hs[0].mean((2, 3)))
    for i in range(3):
        torch.testing.assert_close(cols[f"stage.{i}"], hs[i + 1].mean((2, 3)))
    torch.testing.assert_close(cols["stage.3"], hs[4].reshape(6, -1))
    assert job.inputs.stored_shapes["stage.3"] == list(hs[4].shape[1:])  # (C, H, W) recorded


def test_resnet_patch_rows_are_map_locations(model_dirs):
    cols, px, model, _ = run_job(model_dirs["resnet"], "stage.2", pool="none", n=2, resize="64")
    fmap = hidden_states(model, px)[3]  # (2, C, H, W)
    c, h, w = fmap.shape[1:]
    torch.testing.assert_close(cols["stage.2"], fmap.permute(0, 2, 3, 1).reshape(-1, c))
    assert cols["patch_row"][: h * w].tolist() == [t // w for t in range(h * w)]
    assert cols["patch_col"][: h * w].tolist() == [t % w for t in range(h * w)]


@pytest.mark.parametrize("arch", ["vit", "dinov2", "clip"])
def test_transformer_aliases_decompose_the_residual(model_dirs, arch):
    """resid.N = hidden_states[N+1], and resid.N = resid.N-1 + attn.N + mlp.N (what each block adds)."""
    cols, px, model, _ = run_job(model_dirs[arch], "embed,resid.*,attn.*,mlp.*", pool="none", n=2,
                                 resize="32")
    hs = hidden_states(model, px)
    t, d = hs[0].shape[1:]
    torch.testing.assert_close(cols["embed"].reshape(2, t, d), hs[0])
    for i in range(2):
        torch.testing.assert_close(cols[f"resid.{i}"].reshape(2, t, d), hs[i + 1])
        prev = cols["embed"] if i == 0 else cols[f"resid.{i - 1}"]
        torch.testing.assert_close(prev + cols[f"attn.{i}"] + cols[f"mlp.{i}"], cols[f"resid.{i}"],
                                   rtol=1e-4, atol=1e-5)


def test_mlp_hidden_is_the_input_of_the_output_projection(model_dirs):
    cols, px, model, _ = run_job(model_dirs["vit"], "resid.0,mlp_hidden.1", pool="none", n=2)
    hs = hidden_states(model, px)
    block = model.layers[1]
    with torch.no_grad():
        x = block.layernorm_after(hs[1] + block.attention(block.layernorm_before(hs[1]))[0])
        ref = block.mlp.activation_fn(block.mlp.fc1(x))
    torch.testing.assert_close(cols["mlp_hidden.1"].reshape(2, 17, -1), ref, rtol=1e-4, atol=1e-5)


def test_float16_storage_is_the_rounded_value(model_dirs):
    cols, px, model, _ = run_job(model_dirs["vit"], "resid.1", n=3, start=10, dtype="float16")
    ref = hidden_states(model, px)[2][:, 0]
    assert cols["resid.1"].dtype == torch.float16
    assert torch.equal(cols["resid.1"], ref.half())
    assert cols["stimulus_id"].tolist() == ["image_11", "image_12", "image_13"]
    assert np.array_equal(cols["example_id"], [10, 11, 12])
