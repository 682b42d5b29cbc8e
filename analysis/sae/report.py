"""Evaluation of a trained SAE and what people look at: metrics JSON lines, a training-curve plot and a
latent firing-frequency histogram."""

from __future__ import annotations

import io
import json

import numpy as np
import torch


@torch.no_grad()
def evaluate(sae, ds, hook: str, max_rows: int, seed: int = 0, batch_size: int = 4096) -> dict:
    """MSE, FVU, L0 and per-latent firing frequencies of ``sae`` (raw units) on up to ``max_rows`` rows.

    FVU = sum of squared errors / sum of squared deviations from the evaluated rows' mean.
    """
    n = 0
    sse = 0.0
    l0 = 0.0
    sum_x = None
    sum_x2 = 0.0
    fires = torch.zeros(sae.d_sae, dtype=torch.float64)
    it = ds.iter_batches(hook, batch_size=min(batch_size, max_rows), shuffle=True, seed=seed + 7_919, columns=[])
    gen = iter(it)
    for batch in gen:
        x = batch[hook].reshape(len(batch[hook]), -1).float()
        x = x[: max_rows - n]
        z = sae.encode(x)
        recon = sae.decode(z)
        sse += float((recon - x).double().pow(2).sum())
        active = z != 0
        l0 += float(active.sum())
        fires += active.sum(0).double()
        xd = x.double()
        sum_x = xd.sum(0) if sum_x is None else sum_x + xd.sum(0)
        sum_x2 += float(xd.pow(2).sum())
        n += len(x)
        if n >= max_rows:
            break
    gen.close()
    total_var = sum_x2 - float(sum_x.pow(2).sum()) / n
    freq = (fires / n).numpy()
    summary = {"rows": n, "mse": sse / n, "fvu": sse / total_var, "l0": l0 / n,
               "dead_frac": float((freq == 0).mean()), "dense_frac": float((freq > 0.1).mean())}
    return {"summary": summary, "freq": freq}


def write_report(dest, name: str, metrics: list[dict], ev: dict) -> None:
    """``metrics.jsonl``, ``training_curves.png``, ``latent_frequency.png`` and ``eval.json`` under ``dest``."""
    rows = [{"step": m["step"], "tokens": m["tokens"], "lr_factor": m["lr_factor"], **m[name]}
            for m in metrics if name in m]
    dest.put_bytes("metrics.jsonl", "".join(json.dumps(r) + "\n" for r in rows).encode())
    dest.put_bytes("eval.json", json.dumps(ev["summary"], indent=1).encode())
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if rows:
        fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
        tokens = [r["tokens"] for r in rows]
        for ax, key, label in zip(axes, ("fvu", "l0", "dead_frac"), ("FVU", "L0 (active latents)",
                                                                      "dead-latent fraction"), strict=True):
            ax.plot(tokens, [r[key] for r in rows])
            ax.set_xlabel("training tokens")
            ax.set_title(label)
            if key == "fvu":
                ax.set_yscale("log")
        fig.suptitle(f"{name}: final eval FVU {ev['summary']['fvu']:.4f}, L0 {ev['summary']['l0']:.1f}")
        fig.tight_layout()
        dest.put_bytes("training_curves.png", _png(fig))
        plt.close(fig)
    freq = ev["freq"]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    alive = freq[freq > 0]
    if alive.size:
        ax.hist(np.log10(alive), bins=50)
    ax.set_xlabel("log10 firing frequency (fraction of rows)")
    ax.set_ylabel("latents")
    ax.set_title(f"{name}: {int((freq == 0).sum())} of {freq.size} latents never fired")
    fig.tight_layout()
    dest.put_bytes("latent_frequency.png", _png(fig))
    plt.close(fig)


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()
