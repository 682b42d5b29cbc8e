"""SAELens reads our export with its own code (``ActivationsStore`` over a cached-activations folder, by the
``hook_name`` of the cfg.json of an SAE of ours trained on the hook) and its own trainer runs on it; its cache
comes back as an actlake dataset (``import --layout saelens``) row for row."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import shards
from cluster.cli import main

HOOK = "resid.1"
COLUMN = "blocks.1.hook_resid_post"  #: SAELens' hook_name of HOOK: the export's column, an SAE's cfg.json hook_name
D, CONTEXT = 32, 16


@pytest.fixture(scope="module")
def token_dataset(tmp_path_factory):
    """A token-level dataset: 21 examples of 16 tokens over 3 units (the last window is cut off by the export)."""
    uri = str(tmp_path_factory.mktemp("src") / "ds")
    rng = np.random.default_rng(0)
    with shards.create_dataset(uri, {HOOK: {"shape": [D], "dtype": "float16"}}) as w:
        for u, examples in enumerate([(0, 8), (8, 16), (16, 21)]):
            ids = np.repeat(np.arange(*examples), CONTEXT)
            w.write_unit(u, {"example_id": ids, "position": np.tile(np.arange(CONTEXT), len(ids) // CONTEXT),
                             "token_id": rng.integers(0, 1000, len(ids)),
                             HOOK: (rng.standard_normal((len(ids), D)) * 2).astype(np.float16)})
    return uri


def _saelens_store(path: str, hook_name: str = COLUMN):
    from sae_lens.training.activations_store import ActivationsStore

    return ActivationsStore(model=None, dataset=None, streaming=False, hook_name=hook_name, hook_head_index=None,
                            context_size=CONTEXT, d_in=D, n_batches_in_buffer=4, total_training_tokens=20 * 64,
                            store_batch_size_prompts=8, train_batch_size_tokens=64, prepend_bos=False,
                            normalize_activations="none", device=torch.device("cpu"), dtype="float32",
                            cached_activations_path=path)


def test_saelens_reads_the_export_and_trains_on_it(token_dataset, tmp_path, capsys):
    out = tmp_path / "cache"
    assert main(["export", "--format", "saelens", token_dataset, "--hook", HOOK, "--out", str(out),
                 "--context-size", str(CONTEXT), "--max-tokens", str(20 * CONTEXT + 5)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["sequences"] == 20 and summary["dropped_tokens"] == 5
    assert (summary["hook"], summary["column"]) == (HOOK, COLUMN)
    assert json.loads((out / "actlake_export.json").read_text())["column"] == COLUMN
    assert "TransformerLens name" in json.loads((out / "dataset_info.json").read_text())["description"]
    # the hook_name SAELens' own loader reads from the cfg.json of an SAE of ours trained on the hook
    from sae_lens import SAE

    from analysis.sae.io import TrainedOn, save_sae
    from analysis.sae.registry import create_sae

    save_sae(create_sae("topk", D, 64, k=4, seed=0), str(tmp_path / "sae"),
             TrainedOn(hook=HOOK, in_hooks=(HOOK,)).to_cfg())
    hook_name = SAE.load_from_disk(str(tmp_path / "sae")).cfg.metadata.hook_name
    assert hook_name == COLUMN
    store = _saelens_store(str(out), hook_name)
    cached = store.cached_activation_dataset
    ds = shards.open_dataset(token_dataset)
    x = ds.to_numpy(HOOK, dtype="float32")[:20 * CONTEXT].reshape(20, CONTEXT, D)
    tokens = ds.metadata_table(["token_id"]).column("token_id").to_numpy()[:20 * CONTEXT].reshape(20, CONTEXT)
    assert len(cached) == 20
    np.testing.assert_array_equal(cached[7][hook_name].numpy(), x[7])  # SAELens' own reader, window 7
    np.testing.assert_array_equal(cached[19]["token_ids"].numpy(), tokens[19])

    from sae_lens import LoggingConfig, SAETrainer, TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.config import SAETrainerConfig

    torch.manual_seed(0)
    sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=D, d_sae=64, k=4))
    before = sae.W_dec.detach().clone()
    flat = torch.from_numpy(x.reshape(-1, D))
    with torch.no_grad():
        err0 = (sae.decode(sae.encode(flat)) - flat).pow(2).mean()
    cfg = SAETrainerConfig(total_training_samples=10 * 64, train_batch_size_samples=64, lr=1e-3, lr_end=0.0,
                           lr_warm_up_steps=0, lr_decay_steps=0, lr_scheduler_name="constant", device="cpu",
                           n_checkpoints=0, logger=LoggingConfig(log_to_wandb=False), n_batches_for_norm_estimate=2)
    trained = SAETrainer(cfg, sae, store).fit()  # SAELens' trainer pulls its batches from the store
    assert not torch.equal(trained.W_dec.detach(), before)
    with torch.no_grad():  # trained on these activations: it reconstructs them better than at the start
        err = (trained.decode(trained.encode(flat)) - flat).pow(2).mean()
    assert err < err0


def test_a_saelens_cache_comes_back_row_for_row(token_dataset, tmp_path):
    out = tmp_path / "cache"
    assert main(["export", token_dataset, "--hook", HOOK, "--out", str(out), "--context-size", str(CONTEXT)]) == 0
    back = str(tmp_path / "back")
    assert main(["import", "--layout", "saelens", str(out), "--out", back, "--dtype", "float16",
                 "--unit-size", "100"]) == 0
    a, b = shards.open_dataset(token_dataset), shards.open_dataset(back)
    assert b.num_rows == 21 * CONTEXT
    assert b.hooks == [COLUMN]  # the import names the hook by the column
    assert a.to_numpy(HOOK).tobytes() == b.to_numpy(COLUMN).tobytes()  # float16 -> float32 -> float16: exact
    meta = b.metadata_table(["example_id", "position", "token_id"]).to_pandas()
    src = a.metadata_table(["example_id", "position", "token_id"]).to_pandas()
    assert (meta.values == src.values).all()
    assert b.manifest.provenance.details["import"]["exported_from"]["dataset_id"] == a.dataset_id
    assert shards.verify_dataset(back).ok


@pytest.mark.parametrize(("hook", "module", "given", "want"), [
    ("resid.3", "encoder.layer.3", "", "blocks.3.hook_resid_post"),
    ("mlp_hidden.5", "model.layers.5.mlp.act_fn", "", "blocks.5.mlp.hook_post"),
    ("embed", "model.embed_tokens", "", "hook_embed"),
    ("stage.2", "layer3", "", "layer3"),  # no TransformerLens name: the module path, as the SAE's cfg.json has it
    ("encoder.layer.3.output", "encoder.layer.3.output", "", "encoder.layer.3.output"),
    ("resid.3", "encoder.layer.3", "resid.3", "resid.3"),  # --column keeps our alias
])
def test_the_column_is_named_as_an_sae_cfg_names_the_hook(hook, module, given, want):
    from analysis.sae.io import saelens_hook_name
    from cluster.share_commands import export_column

    column, note = export_column(hook, module, given)
    assert column == want and hook in note
    if not given:  # the name save_sae writes as cfg.json's hook_name
        assert saelens_hook_name(hook, module) == want


def test_alias_column_on_request(token_dataset, tmp_path, capsys):
    out = tmp_path / "cache"
    assert main(["export", token_dataset, "--hook", HOOK, "--out", str(out), "--context-size", str(CONTEXT),
                 "--column", HOOK]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["column"] == HOOK
    assert _saelens_store(str(out), HOOK).cached_activation_dataset.column_names[0] == HOOK


def test_bad_exports_are_refused_before_any_work(token_dataset, tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    assert main(["export", token_dataset, "--hook", HOOK, "--out", str(tmp_path / "full")]) == 2
    assert main(["export", token_dataset, "--hook", "nope", "--out", str(tmp_path / "a")]) == 2
    assert main(["export", token_dataset, "--hook", HOOK, "--out", str(tmp_path / "b"),
                 "--context-size", "100000"]) == 2
    assert main(["import", "--layout", "saelens", str(tmp_path / "full"), "--out", str(tmp_path / "c")]) == 2
    assert not any((tmp_path / n).exists() for n in ("a", "b", "c"))
