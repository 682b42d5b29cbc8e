"""Causal LMs are recognised by what they are (transformers' causal-LM auto mapping), not by a class-name suffix.

A random small model of each family, saved with ``save_pretrained`` and extracted from its directory (offline) as
an actor extracts a unit, stores ``resid.N`` and per-token loss equal to a plain transformers forward of the same
saved model, loaded with the class ``save_pretrained`` recorded. GPT-2 (``GPT2LMHeadModel``) used to load without
its head and with no ``resid.N``; Pythia (GPT-NeoX) had no ``resid.N`` either."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import transformers

from ingest.config import ExtractConfig
from ingest.driver import plan_extraction
from ingest.modalities import get_modality
from ingest.models import load_model
from shards.errors import InterventionError, UnknownHookError
from shards.modelpaths import is_causal_lm_config, is_causal_lm_model
from tests.model_factories import CAUSAL_LM_FAMILIES, save_tiny_causal_lm, tiny_gpt2

LAYERS = 3
#: where each family's final norm is: transformers' last hidden state is the last block's output after it
FINAL_NORM = {"gpt2": "transformer.ln_f", "pythia": "gpt_neox.final_layer_norm"}


def extract(tmp_path, model: str, hooks: list[str], **kw) -> tuple[dict, list[dict]]:
    """One unit extracted as an actor extracts it: (its columns, the model inputs of its batches)."""
    cfg = ExtractConfig(model=model, data="builtin:concepts?n=6", hooks=hooks, out=str(tmp_path / "out"),
                        dtype="float32", batch_size=3, **kw)
    plan = plan_extraction(cfg)
    modality = get_modality(plan.modality)(plan, load_model(cfg.model, cfg.model_dtype, "cpu"))
    prepared = modality.prepare(plan.units()[0])
    return modality.forward(prepared).columns, [b.inputs for b in prepared.batches]


def reference(model_dir: str, family: str, inputs: list[dict]) -> tuple[list[torch.Tensor], np.ndarray, torch.Tensor,
                                                                   torch.nn.Module]:
    """Plain transformers, per stored token: the hidden states after each block (the last one after the final
    norm, as transformers returns it), next-token cross-entropy from the logits (NaN where no next token), ids."""
    config = transformers.AutoConfig.from_pretrained(model_dir, local_files_only=True)
    cls = getattr(transformers, config.architectures[0])  # the class save_pretrained recorded
    model = cls.from_pretrained(model_dir, local_files_only=True, dtype=torch.float32).eval()
    hidden: list[list[torch.Tensor]] = [[] for _ in range(LAYERS)]
    losses, ids = [], []
    with torch.no_grad():
        for enc in inputs:
            out = model(**enc, output_hidden_states=True)
            mask = enc["attention_mask"].bool()
            for layer in range(LAYERS):
                hidden[layer].append(out.hidden_states[layer + 1][mask])
            logits = out.logits.double()  # float64: an exact reference for the stored float32 loss
            ce = F.cross_entropy(logits[:, :-1].transpose(1, 2), enc["input_ids"][:, 1:], reduction="none")
            full = torch.full(enc["input_ids"].shape, float("nan"), dtype=torch.float64)
            full[:, :-1] = torch.where(mask[:, 1:] & mask[:, :-1], ce, torch.tensor(float("nan")))
            losses.append(full[mask])
            ids.append(enc["input_ids"][mask])
    final_norm = dict(model.named_modules())[FINAL_NORM.get(family, "model.norm")]
    return [torch.cat(h) for h in hidden], torch.cat(losses).numpy(), torch.cat(ids), final_norm


@pytest.mark.parametrize("family", CAUSAL_LM_FAMILIES)
def test_a_saved_causal_lm_extracts_resid_and_loss_as_transformers_computes_them(tmp_path, family):
    model_dir = save_tiny_causal_lm(tmp_path / family, family)
    loaded = load_model(model_dir, "float32", "cpu")
    assert is_causal_lm_model(loaded.model) and loaded.info().architecture == type(loaded.model).__name__

    cols, inputs = extract(tmp_path, model_dir, ["resid.*"], save_loss=True)
    hidden, loss, ids, final_norm = reference(model_dir, family, inputs)
    assert np.array_equal(np.asarray(cols["token_id"]), ids.numpy())
    for layer in range(LAYERS - 1):
        torch.testing.assert_close(torch.as_tensor(cols[f"resid.{layer}"]), hidden[layer], rtol=1e-5, atol=1e-5)
    with torch.no_grad():  # the last block's output, through the model's own final norm, is transformers' last state
        last = final_norm(torch.as_tensor(cols[f"resid.{LAYERS - 1}"]))
    torch.testing.assert_close(last, hidden[-1], rtol=1e-5, atol=1e-5)
    got = np.ma.filled(np.ma.asarray(cols["loss"]).astype(np.float64), np.nan)
    assert np.array_equal(np.isnan(got), np.isnan(loss))  # null exactly where no next token exists
    np.testing.assert_allclose(got[~np.isnan(got)], loss[~np.isnan(loss)], rtol=0, atol=1e-5)


def test_a_saved_base_model_is_not_given_a_head(tmp_path):
    """A GPT-2 saved without its head (``GPT2Model``) has a model type the causal mapping knows, but loading it as a
    causal LM would add a random head: it loads as it was saved, and --save-loss is refused."""
    lm = save_tiny_causal_lm(tmp_path / "lm", "gpt2")
    base = tmp_path / "base"
    transformers.GPT2LMHeadModel.from_pretrained(lm, local_files_only=True).transformer.save_pretrained(base)
    transformers.AutoTokenizer.from_pretrained(lm, local_files_only=True).save_pretrained(base)
    config = transformers.AutoConfig.from_pretrained(base, local_files_only=True)
    assert config.model_type == "gpt2" and not is_causal_lm_config(config)
    assert type(load_model(str(base), "float32", "cpu").model).__name__ == "GPT2Model"
    with pytest.raises(UnknownHookError, match=r"Aliases: block\.0-2;"):  # not 'resid.0--1'
        extract(tmp_path, str(base), ["resid.*"])
    with pytest.raises(InterventionError, match="needs a causal language model"):
        extract(tmp_path, str(base), ["block.0"], save_loss=True)


def test_a_factory_subclass_of_a_causal_lm_is_one():
    """A factory's own subclass of a transformers causal LM is recognised by the class it derives from."""
    model, _ = tiny_gpt2()
    subclass = type("MyGPT", (transformers.GPT2LMHeadModel,), {})
    model.__class__ = subclass
    assert is_causal_lm_model(model)
    assert not is_causal_lm_model(model.transformer)  # the body alone has no LM head
