"""Evaluation of a trained SAE and what people look at: metrics JSON lines, a training-curve plot and a
latent firing-frequency histogram."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from analysis.common.plots import pyplot
from analysis.common.results import Results
from analysis.common.stream import stream_rows
from shards.records import JsonRecord


@dataclass
class SaeEval(JsonRecord):
    """An SAE's quality on held-out rows (raw units)."""

    rows: int
    mse: float
    fvu: float  #: sum of squared errors / sum of squared deviations from the evaluated rows' mean
    l0: float
    dead_frac: float  #: latents that never fired on these rows
    dense_frac: float  #: latents firing on more than 10 % of them


@torch.no_grad()
def evaluate(sae, ds, hook: str, max_rows: int, seed: int = 0, batch_size: int = 4096,
             min_position: int = 0) -> tuple[SaeEval, np.ndarray]:
    """The SAE's ``SaeEval`` on up to ``max_rows`` shuffled rows (those at positions >= ``min_position``),
    and each latent's firing frequency."""
    n, sse, l0, sum_x, sum_x2 = 0, 0.0, 0.0, None, 0.0
    fires = torch.zeros(sae.d_sae, dtype=torch.float64)
    for batch in stream_rows(ds, hook, batch_size, shuffle=True, seed=seed + 7_919, max_rows=max_rows,
                             columns=["position"] if min_position else None):
        x = batch["x"] if not min_position else batch["x"][batch["position"] >= min_position]
        if not len(x):
            continue
        z = sae.encode(x)
        sse += float((sae.decode(z) - x).double().pow(2).sum())
        active = z != 0
        l0 += float(active.sum())
        fires += active.sum(0).double()
        xd = x.double()
        sum_x = xd.sum(0) if sum_x is None else sum_x + xd.sum(0)
        sum_x2 += float(xd.pow(2).sum())
        n += len(x)
    total_var = sum_x2 - float(sum_x.pow(2).sum()) / n
    freq = (fires / n).numpy()
    return SaeEval(n, sse / n, sse / total_var, l0 / n, float((freq == 0).mean()), float((freq > 0.1).mean())), freq


def write_report(dest: Results, name: str, metrics: list[dict], ev: SaeEval, freq: np.ndarray) -> None:
    """``metrics.jsonl``, ``training_curves.png``, ``latent_frequency.png`` and ``eval.json`` under ``dest``."""
    rows = [{"step": m["step"], "tokens": m["tokens"], "lr_factor": m["lr_factor"], **m[name]}
            for m in metrics if name in m]
    dest.jsonl("metrics.jsonl", rows)
    dest.json("eval.json", ev.to_json())
    plt = pyplot()
    if rows:
        fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
        tokens = [r["tokens"] for r in rows]
        from matplotlib.ticker import EngFormatter

        for ax, key, label in zip(axes, ("fvu", "l0", "dead_frac"),
                                  ("FVU", "L0 (active latents)", "dead-latent fraction"), strict=True):
            ax.plot(tokens, [r[key] for r in rows])
            ax.set_xlabel("training tokens")
            ax.xaxis.set_major_formatter(EngFormatter())  # 300k, 2M: raw counts run into each other
            ax.set_title(label)
            if key == "fvu":
                ax.set_yscale("log")
        fig.suptitle(f"{name}: final eval FVU {ev.fvu:.4f}, L0 {ev.l0:.1f}")
        fig.tight_layout()
        dest.figure("training_curves.png", fig)
    fig, ax = plt.subplots(figsize=(6, 3.6))
    alive = freq[freq > 0]
    if alive.size:
        ax.hist(np.log10(alive), bins=50)
    ax.set_xlabel("log10 firing frequency (fraction of rows)")
    ax.set_ylabel("latents")
    ax.set_title(f"{name}: {int((freq == 0).sum())} of {freq.size} latents never fired")
    fig.tight_layout()
    dest.figure("latent_frequency.png", fig)
