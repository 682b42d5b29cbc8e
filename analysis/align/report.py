"""Plots of the alignment commands: score against layer with the noise-ceiling band, RDM heatmaps, and the
hook × hook matrix of CKA (or any pairwise metric)."""

from __future__ import annotations

import numpy as np

from analysis.common.plots import panel_grid, pyplot
from analysis.common.results import Results, draws_run_pages, read_npy


def _score_vs_layer(plt, cfg, hooks: list[str], rows: list[dict]):
    fig, ax = plt.subplots(figsize=(max(6.0, 0.45 * len(hooks) + 3), 4.2))
    targets = list(dict.fromkeys(r["target"] for r in rows))
    x = np.arange(len(hooks))
    for i, target in enumerate(targets):
        agg = {r["hook"]: r for r in rows if r["target"] == target and r["subject"] == "all"}
        y = np.array([agg[h]["score"] for h in hooks])
        color = f"C{i}"
        lo = np.array([agg[h]["ci_low"] if agg[h]["ci_low"] is not None else np.nan for h in hooks])
        hi = np.array([agg[h]["ci_high"] if agg[h]["ci_high"] is not None else np.nan for h in hooks])
        sem = np.array([agg[h]["sem"] if agg[h]["sem"] is not None else np.nan for h in hooks])
        if np.isfinite(lo).all():
            ax.fill_between(x, lo, hi, color=color, alpha=0.2, lw=0)
        elif np.isfinite(sem).all():
            ax.errorbar(x, y, yerr=sem, color=color, ls="none", capsize=2)
        ax.plot(x, y, "o-", color=color, label=target)
        nc_lo, nc_hi = agg[hooks[0]]["noise_ceiling_low"], agg[hooks[0]]["noise_ceiling_high"]
        if nc_lo is not None:
            ax.axhspan(nc_lo, nc_hi, color=color, alpha=0.12, hatch="//", lw=0,
                       label=f"{target} noise ceiling")
    ax.set_xticks(x, hooks, rotation=60, ha="right", fontsize=8)
    score = f"{cfg.compare}{'²' if cfg.convention == 'net2brain' else ''}"
    ax.set_ylabel(f"RDM similarity ({score}, mean over subjects)")
    ax.set_title(f"RSA: {cfg.rdm} RDMs, {cfg.convention} convention")
    ax.axhline(0, color="0.6", lw=0.8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _heatmaps(plt, hooks: list[str], mats: dict[str, np.ndarray], brain: dict[str, np.ndarray]):
    shown = [h for h in hooks if h in mats]
    if len(shown) > 4:
        shown = [shown[0], shown[len(shown) // 3], shown[2 * len(shown) // 3], shown[-1]]
    panels = [(h, mats[h]) for h in shown] + [(f"{k} (mean)", v) for k, v in brain.items()]
    fig, axes = panel_grid(len(panels), 3.1, 3.2)  # wrapped: a strip of many RDMs is unreadable at page width
    for ax, (name, m) in zip(axes, panels, strict=True):
        # rank-transformed for display: RDMs of different scales become comparable
        iu = np.triu_indices(len(m), 1)
        r = np.zeros_like(m, dtype=np.float64)
        vals = m[iu]
        r[iu] = np.argsort(np.argsort(vals)) / max(len(vals) - 1, 1)
        r = r + r.T
        ax.imshow(r, cmap="viridis", interpolation="nearest")
        ax.set_title(name, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("RDMs (percentile of dissimilarity)", fontsize=9)
    fig.tight_layout()
    return fig


def write_rsa_plots(out: Results, cfg, hooks: list[str], rows: list[dict], plan, has_rdm: dict[str, bool]) -> None:
    if not draws_run_pages():  # a sweep's run: not even built (its RDMs are read back to draw them)
        return
    plt = pyplot()
    out.figure("rsa_by_layer.png", _score_vs_layer(plt, cfg, hooks, rows))
    mats = {h: read_npy(out.storage.get_bytes(f"hooks/{h}-rdm.npy")) for h in hooks if has_rdm[h]}
    if mats:
        from analysis.align.vectors import square

        brain = {}
        for t in plan.targets:
            if t.keep.all():
                brain[t.name] = square(t.vectors.mean(axis=0))
        out.figure("rdms.png", _heatmaps(plt, hooks, mats, brain))


def write_pair_matrix(out: Results, name: str, rows: list[dict], metric: str, title: str) -> None:
    """A hooks × hooks2 heatmap of one metric's scores."""
    plt = pyplot()
    sel = [r for r in rows if r["method"] == metric]
    if not sel:
        return
    h1 = list(dict.fromkeys(r["hook"] for r in sel))
    h2 = list(dict.fromkeys(r["hook2"] for r in sel))
    m = np.full((len(h1), len(h2)), np.nan)
    for r in sel:
        m[h1.index(r["hook"]), h2.index(r["hook2"])] = r["score"]
        if r["hook2"] in h1 and r["hook"] in h2:  # one dataset: the matrix is symmetric
            m[h1.index(r["hook2"]), h2.index(r["hook"])] = r["score"]
    fig, ax = plt.subplots(figsize=(1.2 + 0.42 * len(h2), 1.0 + 0.42 * len(h1)))
    im = ax.imshow(m, cmap="magma", vmin=np.nanmin(m) if metric != "cka" else 0, vmax=np.nanmax(m) if metric != "cka"
                   else 1)
    ax.set_xticks(range(len(h2)), h2, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(h1)), h1, fontsize=7)
    if len(h1) * len(h2) <= 400:
        for i in range(len(h1)):
            for j in range(len(h2)):
                if np.isfinite(m[i, j]):
                    ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=5.5,
                            color="white" if m[i, j] < np.nanmean(m) else "black")
    fig.colorbar(im, ax=ax, shrink=0.8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    out.figure(name, fig)
