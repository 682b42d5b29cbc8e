"""The SAE's ``cfg.json`` as SAELens and Neuronpedia read it: ``model_name`` (the model the dataset was extracted
from, as its manifest records it) and a TransformerLens-style ``hook_name`` where our alias maps to one (the
module path otherwise), our alias kept as ``actlake_hook``; every actlake reader (``trained_on``) takes the alias,
and a cfg.json written before (``hook_name: resid.3``, no ``actlake_hook``) reads as it did."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import shards
from analysis.sae.io import TrainedOn, load_sae, save_sae, trained_on
from analysis.sae.registry import create_sae
from shards.manifest import ModelInfo

MODEL = ModelInfo(name="HuggingFaceTB/SmolLM2-135M", path="/models/smollm2", architecture="LlamaForCausalLM")


@pytest.mark.parametrize(("hook", "module", "want"), [
    ("resid.3", "model.layers.3", "blocks.3.hook_resid_post"),
    ("attn.11", "model.layers.11.self_attn", "blocks.11.hook_attn_out"),
    ("mlp.0", "model.layers.0.mlp", "blocks.0.hook_mlp_out"),
    ("mlp_hidden.5", "model.layers.5.mlp.act_fn", "blocks.5.mlp.hook_post"),
    ("embed", "model.embed_tokens", "hook_embed"),
    ("stage.2", "layer3", "layer3"),  # a CNN stage: no TransformerLens name, its module path
    ("encoder.layer.3.output", "encoder.layer.3.output", "encoder.layer.3.output"),  # a module path as the hook
])
def test_cfg_names_the_model_and_a_saelens_hook(tmp_path, hook, module, want):
    sae = create_sae("topk", 16, 64, k=4, seed=1)
    extra = {**TrainedOn(hook=hook, in_hooks=(hook,), model=MODEL).to_cfg(), "hook_module": module}
    save_sae(sae, str(tmp_path / "sae"), extra)
    cfg = json.loads((tmp_path / "sae" / "cfg.json").read_text())
    assert (cfg["model_name"], cfg["hook_name"]) == ("HuggingFaceTB/SmolLM2-135M", want)
    assert cfg["metadata"] == {"model_name": "HuggingFaceTB/SmolLM2-135M", "hook_name": want, "actlake_hook": hook}
    assert trained_on(load_sae(str(tmp_path / "sae"))).hook == hook
    cfg.pop("actlake")  # SAELens' fields alone: the alias still comes back (actlake_hook)
    (tmp_path / "sae" / "cfg.json").write_text(json.dumps(cfg))
    assert trained_on(load_sae(str(tmp_path / "sae"))).hook == hook


@pytest.mark.parametrize("arch", ["topk", "jumprelu"])
def test_saelens_loads_the_names(tmp_path, arch):
    """SAELens' own loader puts model_name and hook_name in its metadata (before: it read a cfg without a
    ``sae_lens_version`` as the pre-6.0 layout and dropped the nested metadata: hook_name None)."""
    sae_lens = pytest.importorskip("sae_lens")
    ours = create_sae(arch, 16, 64, k=4, seed=2)
    save_sae(ours, str(tmp_path / arch), {**TrainedOn(hook="resid.7", in_hooks=("resid.7",), model=MODEL).to_cfg()})
    theirs = sae_lens.SAE.load_from_disk(str(tmp_path / arch))
    assert theirs.cfg.metadata.model_name == "HuggingFaceTB/SmolLM2-135M"
    assert theirs.cfg.metadata.hook_name == "blocks.7.hook_resid_post"
    x = torch.randn(20, 16)
    with torch.no_grad():
        torch.testing.assert_close(theirs.encode(x), ours.eval().encode(x), rtol=1e-5, atol=1e-6)


def test_a_transcoder_names_its_output_hook_too(tmp_path):
    tc = create_sae("relu", 16, 32, seed=0)
    tc.make_transcoder(24)
    save_sae(tc, str(tmp_path / "tc"), TrainedOn(hook="resid.2", in_hooks=("resid.2",), out_hooks=("mlp.2",),
                                                 kind="transcoder", model=MODEL).to_cfg())
    cfg = json.loads((tmp_path / "tc" / "cfg.json").read_text())
    assert (cfg["hook_name"], cfg["hook_name_out"]) == ("blocks.2.hook_resid_post", "blocks.2.hook_mlp_out")


def test_a_cfg_written_before_reads_the_same(tmp_path):
    """cfg.json as save_sae wrote it before: metadata.hook_name our alias, no actlake_hook, no model_name; with
    and without its actlake section."""
    save_sae(create_sae("topk", 16, 64, k=4), str(tmp_path / "old"), {"hook": "resid.3"})
    path = tmp_path / "old" / "cfg.json"
    cfg = json.loads(path.read_text())
    for k in ("model_name", "hook_name", "hook_name_out"):
        cfg.pop(k, None)
    cfg["metadata"] = {"hook_name": "resid.3"}
    path.write_text(json.dumps(cfg))
    assert trained_on(load_sae(str(tmp_path / "old"))).hook == "resid.3"
    cfg.pop("actlake")
    path.write_text(json.dumps(cfg))
    assert trained_on(load_sae(str(tmp_path / "old"))).hook == "resid.3"


def test_sae_train_records_the_model_and_the_hook(tmp_path):
    """`sae train` on a dataset whose manifest names its model: cfg.json carries that model's name, the
    TransformerLens hook and the alias, and `sae encode` (a reader of the cfg) reads the alias' rows."""
    from analysis.sae.config import SaeEncodeConfig, SaeTrainConfig
    from analysis.sae.encode import encode_dataset
    from analysis.sae.train import train_sae
    from shards.manifest import Provenance

    rng = np.random.default_rng(0)
    x = rng.standard_normal((4000, 8)).astype(np.float32)
    data = str(tmp_path / "ds")
    with shards.create_dataset(data, {"resid.1": {"shape": [8], "dtype": "float32", "module": "model.layers.1"}},
                               provenance=Provenance(model=MODEL)) as w:
        w.write_unit(0, {"example_id": np.repeat(np.arange(100), 40), "position": np.tile(np.arange(40), 100),
                         "resid.1": x})
    train_sae(SaeTrainConfig(data=data, hook="resid.1", arch="topk", k="2", expansion="2", tokens="8k",
                             batch_size=512, out=str(tmp_path / "sae"), checkpoint_every=0, threads=1))
    cfg = json.loads((tmp_path / "sae" / "cfg.json").read_text())
    assert (cfg["model_name"], cfg["hook_name"]) == (MODEL.name, "blocks.1.hook_resid_post")
    assert cfg["metadata"]["actlake_hook"] == "resid.1" and cfg["actlake"]["hook"] == "resid.1"
    s = encode_dataset(SaeEncodeConfig(sae=str(tmp_path / "sae"), out=str(tmp_path / "latents")))
    assert s.rows == 4000
