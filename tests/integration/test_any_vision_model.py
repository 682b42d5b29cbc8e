"""Any torch vision model (issue 28, item 1): a factory's plain ``nn.Module`` called as ``model(x)`` with its
preprocessing declared beside it, hooked by module path or by ``block.N``. The real model is EfficientNet-Lite0
with its ImageNet weights (installed offline as a test extra): image_01 of Net2Brain's stimuli (horses) must come
out as class 339 "sorrel", as ../shared/ENVIRONMENT.md measured, and the stored logits must equal a forward pass
of the same module on independently preprocessed pixels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import shards
from ingest.config import ExtractConfig
from ingest.driver import run_extraction
from ingest.hooks import resolve_hooks
from ingest.models import ModelLoadError, VisionModelSpec, load_model
from shards.errors import UnknownHookError
from tests.shared_data import DATA

pytest.importorskip("efficientnet_lite_pytorch")
pytestmark = pytest.mark.integration
STIMULI = DATA / "net2brain78" / "stimuli"
LITE0 = "ingest.model_zoo.efficientnet_lite0:load"


def _pixels(path) -> torch.Tensor:
    """ImageNet preprocessing by hand: shorter side to 256 (bicubic), centre 224 crop, mean/std."""
    img = Image.open(path).convert("RGB")
    w, h = img.size
    s = 256 / min(w, h)
    img = img.resize((round(w * s), round(h * s)), Image.BICUBIC)
    w, h = img.size
    left, top = (w - 224) // 2, (h - 224) // 2
    x = np.asarray(img.crop((left, top, left + 224, top + 224)), dtype=np.float32) / 255
    x = (x - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    return torch.as_tensor(x, dtype=torch.float32).permute(2, 0, 1)[None]


def test_pretrained_cnn_through_the_plain_call(ray_local, tmp_path):
    out = str(tmp_path / "lite0")
    s = run_extraction(ExtractConfig(model=LITE0, data=str(STIMULI), hooks=["block.*", "_fc"], dtype="float32",
                                     max_examples=6, out=out, workers=1))
    assert s.modality == "image" and s.rows == 6
    ds = shards.open_dataset(out)
    assert ds.hooks == [*(f"block.{i}" for i in range(16)), "_fc"]
    assert ds.manifest.provenance.details["preprocessing"]["crop"] == 224  # the factory's declaration
    logits = torch.as_tensor(ds.to_numpy("_fc"))
    p = logits.softmax(1)
    assert int(p[0].argmax()) == 339 and float(p[0, 339]) > 0.85  # image_01: horses -> "sorrel"
    net = load_model(LITE0).model
    with torch.no_grad():
        direct = net(_pixels(STIMULI / "image_01.jpg"))[0]
    assert torch.corrcoef(torch.stack([direct, logits[0]]))[0, 1] > 0.999  # resampling differs by rounding only
    pooled = ds.to_numpy("block.15")
    assert pooled.shape == (6, 320)


def test_bad_factories_and_hooks(tmp_path):
    with pytest.raises(ModelLoadError, match="returned str, not a torch.nn.Module"):
        load_model("tests.integration.test_any_vision_model:not_a_module")
    with pytest.raises(ModelLoadError, match="call='forward'"):
        VisionModelSpec(torch.nn.Identity(), call="forward")  # type: ignore[arg-type]
    net = load_model(LITE0).model
    with pytest.raises(UnknownHookError, match="matches nothing"):
        resolve_hooks(net, "layer*.conv")
    assert [h.module for h in resolve_hooks(net, "block.1*")] == [f"_blocks.{i}" for i in (1, *range(10, 16))]


def not_a_module():
    return "efficientnet"
