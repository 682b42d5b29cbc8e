"""What people look at after training: metrics JSON lines, a training-curve plot and a latent firing-frequency
histogram (the evaluation itself: ``analysis.sae.evals.core``)."""

from __future__ import annotations

import numpy as np

from analysis.common.plots import pyplot
from analysis.common.results import Results
from analysis.sae.evals.core import SaeEval
from analysis.sae.evals.core_suite import density_figure


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
    dest.figure("latent_frequency.png", density_figure(freq, name))
