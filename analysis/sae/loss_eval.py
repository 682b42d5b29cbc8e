"""What an SAE does to the model: next-token loss with its reconstruction spliced in, against the clean and the
zero-ablated model ("CE loss recovered", as SAELens' ``get_recons_loss`` and dictionary_learning's
``loss_recovered`` compute it), KL(clean || spliced), and per-position curves. Pure functions of the per-token
columns an ``sae eval`` extraction stores; no I/O."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from analysis.common.plots import pyplot
from shards.columns import POSITION
from shards.records import JsonRecord


@dataclass
class LossEval(JsonRecord):
    """Means over the evaluated tokens that have a next token (causal LMs)."""

    tokens: int
    ce_clean: float
    ce_spliced: float
    ce_ablated: float
    ce_loss_recovered: float  #: (CE_abl - CE_sae) / (CE_abl - CE_clean); 1 = the SAE loses nothing
    delta_loss: float  #: CE_sae - CE_clean
    kl: float  #: KL(clean || spliced) of the next-token distributions, nats per token
    kl_ablated: float  #: KL(clean || zero-ablated)


@dataclass
class CosineEval(JsonRecord):
    """Models without an LM head: cosine of the final hidden state with the hook spliced / ablated vs clean."""

    tokens: int
    cos_spliced: float
    cos_ablated: float
    cos_recovered: float  #: (cos_sae - cos_abl) / (1 - cos_abl); 1 = the final states are unchanged


def _valid(*cols: np.ndarray) -> np.ndarray:
    return np.logical_and.reduce([np.isfinite(c) for c in cols])


def loss_eval(clean: np.ndarray, spliced: np.ndarray, ablated: np.ndarray, kl: np.ndarray,
              kl_ablated: np.ndarray) -> LossEval:
    """The loss metrics over the tokens where every loss exists (nulls read as NaN are left out)."""
    ok = _valid(clean, spliced, ablated)
    c, s, a = (float(np.mean(x[ok], dtype=np.float64)) for x in (clean, spliced, ablated))
    return LossEval(tokens=int(ok.sum()), ce_clean=c, ce_spliced=s, ce_ablated=a,
                    ce_loss_recovered=(a - s) / (a - c) if a != c else float("nan"), delta_loss=s - c,
                    kl=float(np.mean(kl, dtype=np.float64)), kl_ablated=float(np.mean(kl_ablated, dtype=np.float64)))


def cosine_eval(cos_spliced: np.ndarray, cos_ablated: np.ndarray) -> CosineEval:
    s, a = float(np.mean(cos_spliced, dtype=np.float64)), float(np.mean(cos_ablated, dtype=np.float64))
    return CosineEval(tokens=int(len(cos_spliced)), cos_spliced=s, cos_ablated=a,
                      cos_recovered=(s - a) / (1 - a) if a != 1 else float("nan"))


def position_curves(position: np.ndarray, columns: dict[str, np.ndarray]) -> pa.Table:
    """Per position in the context: token count and the mean of each column (NaNs left out)."""
    positions = np.unique(position)
    out = {POSITION: positions.astype(np.int32), "tokens": []}
    for name in columns:
        out[name] = []
    for p in positions:
        at = position == p
        out["tokens"].append(int(at.sum()))
        for name, col in columns.items():
            v = col[at]
            v = v[np.isfinite(v)]
            out[name].append(float(v.mean()) if len(v) else None)
    return pa.table(out)


def position_figure(curves: pa.Table, title: str):
    """Loss (or cosine) by position, each pass a line; KL on a second panel when there is one."""
    plt = pyplot()
    names = [n for n in curves.column_names if n not in (POSITION, "tokens")]
    kls = [n for n in names if n.startswith("kl")]
    main = [n for n in names if n not in kls]
    fig, axes = plt.subplots(1, 2 if kls else 1, figsize=(11 if kls else 6, 3.6), squeeze=False)
    x = curves.column(POSITION).to_numpy()
    for n in main:
        axes[0, 0].plot(x, curves.column(n).to_numpy(zero_copy_only=False), label=n)
    axes[0, 0].set_xlabel("position in context")
    axes[0, 0].set_ylabel("next-token CE (nats)" if any(n.startswith("ce") for n in main) else "cosine")
    axes[0, 0].legend()
    for n in kls:
        axes[0, 1].plot(x, curves.column(n).to_numpy(zero_copy_only=False), label=n)
        axes[0, 1].set_xlabel("position in context")
        axes[0, 1].set_ylabel("KL(clean || pass), nats")
        axes[0, 1].legend()
    fig.suptitle(title)
    fig.tight_layout()
    return fig
