"""The logit lens' inputs, read once by the driver: the unembedding (the dataset's artifact or ``--model``),
the last layer's rows at the sample and each sampled row's next token."""

from __future__ import annotations

import numpy as np
import torch

from analysis.geometry.config import StatsConfig
from analysis.geometry.logit_lens import LensInputs
from shards.columns import EXAMPLE_ID, POSITION, TOKEN_ID
from shards.reader import Dataset
from shards.unembed import UNEMBED, NoUnembeddingError, Unembed, load_unembed


def dataset_unembed(ds: Dataset) -> Unembed | None:
    """The unembedding stored with the dataset (checked against its manifest checksum), or None."""
    data = ds.read_artifact(UNEMBED, "Extract again with --save-unembed, or pass --model.")
    return Unembed.from_bytes(data) if data is not None else None


def next_tokens(ds: Dataset, rows: np.ndarray) -> np.ndarray:
    """The token after each row in its example (-1 where the row ends its example or has no token id)."""
    cols = [EXAMPLE_ID, POSITION, TOKEN_ID]
    here = ds.take(rows, hooks=[], columns=cols)
    after_rows = np.minimum(rows + 1, ds.num_rows - 1)
    after = ds.take(after_rows, hooks=[], columns=cols)
    same = ((rows + 1 < ds.num_rows) & (after[EXAMPLE_ID].numpy() == here[EXAMPLE_ID].numpy())
            & (after[POSITION].numpy() == here[POSITION].numpy() + 1))
    tok = after[TOKEN_ID].numpy().astype(np.int64)
    return np.where(same & (tok >= 0), tok, -1)


def plan_lens(cfg: StatsConfig, ds: Dataset, chain: list[str], rows: np.ndarray) -> tuple[LensInputs | None, list[str],
                                                                                        tuple[str, str] | None]:
    """The lens' inputs and the hooks it applies to, or why it cannot run and the fix."""
    try:
        unembed = load_unembed(cfg.model) if cfg.model else dataset_unembed(ds)
    except NoUnembeddingError as exc:
        raise type(exc)(f"--stats logit_lens: {exc}") from None
    if unembed is None:
        return None, [], ("the dataset stores no unembedding and no --model was given",
                          "Extract with --save-unembed (causal LMs), or pass --model DIR|PACKAGE|unembed.safetensors.")
    final = f"resid.{unembed.num_layers - 1}"
    if final not in ds.hooks:
        return None, [], (f"the lens compares every layer with the model's own prediction, from its last block's "
                          f"output {final}, which the dataset lacks",
                          f"Extract with --hooks including {final} (e.g. 'embed,resid.*').")
    hooks = [h for h in chain if ds.hook_spec(h).numel == unembed.d_model]
    if not hooks:
        return None, [], (f"no residual hook of width {unembed.d_model} (the unembedding's) was asked for",
                          "Use --hooks 'embed,resid.*'.")
    final_x = ds.take(rows, hooks=[final], dtype="float32")[final].reshape(len(rows), -1)
    return LensInputs(unembed, final, final_x.to(torch.float32), next_tokens(ds, rows)), hooks, None
