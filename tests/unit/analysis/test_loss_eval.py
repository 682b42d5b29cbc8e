"""`sae eval`'s numbers from per-token columns, against hand computations."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.sae.loss_eval import cosine_eval, loss_eval, position_curves
from analysis.sae.model_eval import parse_split
from shards.errors import ConfigError


def test_ce_loss_recovered_and_kl_leave_out_tokens_without_a_next_token():
    clean = np.array([2.0, 3.0, np.nan, 1.0])
    spliced = np.array([2.5, 3.5, np.nan, 1.5])
    ablated = np.array([6.0, 7.0, np.nan, 5.0])
    ev = loss_eval(clean, spliced, ablated, np.array([0.1, 0.2, 0.3, 0.4]), np.array([1.0, 2.0, 3.0, 4.0]))
    assert ev.tokens == 3
    assert ev.ce_clean == pytest.approx(2.0) and ev.ce_spliced == pytest.approx(2.5) and ev.ce_ablated == 6.0
    assert ev.ce_loss_recovered == pytest.approx((6.0 - 2.5) / (6.0 - 2.0))
    assert ev.delta_loss == pytest.approx(0.5)
    assert ev.kl == pytest.approx(0.25) and ev.kl_ablated == pytest.approx(2.5)  # KL exists at every token


def test_cosine_recovered_and_position_curves():
    ev = cosine_eval(np.array([0.9, 0.8]), np.array([0.5, 0.3]))
    assert ev.cos_recovered == pytest.approx((0.85 - 0.4) / (1 - 0.4))
    t = position_curves(np.array([0, 1, 1, 2]), {"ce": np.array([1.0, 2.0, 4.0, np.nan])})
    assert t.column("tokens").to_pylist() == [1, 2, 1]
    assert t.column("ce").to_pylist() == [1.0, 3.0, None]


@pytest.mark.parametrize("text", ["half", "10:5", "3", "-1:4"])
def test_eval_split_names_its_forms(text):
    with pytest.raises(ConfigError, match="heldout, all, or START:STOP"):
        parse_split(text)


def test_sae_eval_of_a_run_of_several_saes_names_each(tmp_path):
    import json

    from cluster.sae_eval import SaeEvalConfig, run

    (tmp_path / "training_summary.json").write_text(json.dumps({"saes": {"resid.1-topk-k8-x4": {},
                                                                         "resid.1-topk-k16-x4": {}}}))
    with pytest.raises(ConfigError, match=r"run of 2 SAEs; evaluate one at a time: --sae .*resid.1-topk-k16-x4"):
        run(SaeEvalConfig(sae=str(tmp_path), out=str(tmp_path / "e")))
