"""The stats plots: norm and change by layer, sparsity and voids by layer, spectra, massive activations,
cluster indices by layer, logit lens by layer. Each is written only when its statistics were computed."""

from __future__ import annotations

import numpy as np

from analysis.common.plots import panel_grid, pyplot
from shards.columns import POSITION, TOKEN_ID


def _series(rows: list[dict], key: str) -> list[float]:
    return [np.nan if r.get(key) is None else float(r[key]) for r in rows]


def _has(rows: list[dict], *keys: str) -> bool:
    return any(r.get(k) is not None for r in rows for k in keys)


def _layer_axes(ax, rows: list[dict]) -> None:
    ax.set_xticks(range(len(rows)), [r["hook"] for r in rows], rotation=45, ha="right", fontsize=7)


def norms_figure(rows: list[dict]):
    plt = pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    xs = np.arange(len(rows))
    mean = np.array(_series(rows, "mean_norm"))
    if _has(rows, "norm_p05"):  # percentiles: a band that heavy tails (massive activations) cannot push below 0
        a.fill_between(xs, _series(rows, "norm_p05"), _series(rows, "norm_p95"), alpha=0.2, label="5th-95th pct")
        a.plot(xs, _series(rows, "norm_p99"), "--", color="gray", label="99th percentile")
    a.plot(xs, mean, "o-", label="mean ‖x‖")
    if np.nanmax(mean) > 50 * max(np.nanmin(mean), 1e-12):
        a.set_yscale("log")
    a.set_ylabel("‖x‖₂")
    a.legend(fontsize=7)
    _layer_axes(a, rows)
    for key, label in (("change_cos", "1 − cos(x_prev, x)"), ("change_rel", "‖x − x_prev‖ / ‖x_prev‖"),
                       ("depth_rel_contribution", "‖a + m‖ / ‖h‖"), ("void_fraction", "void fraction (LAC)")):
        if _has(rows, key):
            b.plot(xs, _series(rows, key), "o-", label=label)
    b.set_title("layer change")
    if b.lines:
        b.legend(fontsize=7)
    _layer_axes(b, rows)
    fig.suptitle("norms and change by layer")
    fig.tight_layout()
    return fig


def sparsity_figure(rows: list[dict]):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    xs = np.arange(len(rows))
    for key, label in (("sparsity", "|x| ≤ eps"), ("non_positive", "x ≤ 0 (post-activation)"),
                       ("mean_firing_frequency", "mean firing frequency")):
        if _has(rows, key):
            ax.plot(xs, _series(rows, key), "o-", label=label)
    ax.set_ylabel("fraction")
    ax.legend(fontsize=7)
    _layer_axes(ax, rows)
    ax.set_title("sparsity by layer")
    fig.tight_layout()
    return fig


def spectrum_figure(spectra: dict[str, list[dict]]):
    plt = pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    cmap = plt.get_cmap("viridis")
    for i, (hook, rows) in enumerate(spectra.items()):
        lam = np.array([r["eigenvalue"] for r in rows])
        color = cmap(i / max(len(spectra) - 1, 1))
        a.loglog(np.arange(1, len(lam) + 1), np.clip(lam / max(lam.sum(), 1e-300), 1e-12, None), color=color,
                 label=hook)
        b.plot(np.arange(1, len(lam) + 1), [r["cumulative_variance"] for r in rows], color=color, label=hook)
    a.set_xlabel("component")
    a.set_ylabel("eigenvalue / total")
    b.set_xscale("log")
    b.set_xlabel("components")
    b.set_ylabel("cumulative variance")
    a.legend(fontsize=6, ncol=2)
    fig.suptitle("covariance spectrum by hook")
    fig.tight_layout()
    return fig


def massive_figure(massive: dict[str, list[dict]]):
    plt = pyplot()
    hooks = list(massive)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.6 * len(hooks) + 3), 4))
    for i, h in enumerate(hooks):
        rows = massive[h]
        vals = [abs(r["value"]) for r in rows]
        ax.scatter(np.full(len(vals), i) + np.linspace(-0.2, 0.2, len(vals)), vals, s=8,
                   c=["tab:red" if r["massive"] else "tab:blue" for r in rows])
        for r in rows[:1]:  # the largest: which dimension, which token
            ax.annotate(f"d{r['dim']} t{r[TOKEN_ID]}@{r[POSITION]}", (i, abs(r["value"])), fontsize=6)
    ax.set_yscale("log")
    ax.set_xticks(range(len(hooks)), hooks, rotation=45, ha="right", fontsize=7)
    ax.set_ylabel("|x| of the top entries (red: massive)")
    ax.set_title("massive activations: dimension d, token t @ position")
    fig.tight_layout()
    return fig


def clusters_figure(rows: list[dict], label: str | None):
    keys = [k for k in ("silhouette", "davies_bouldin", "calinski_harabasz", "dunn", "xie_beni", "aqi", "aqi_tsne")
            if _has(rows, k)]
    # wrapped rows of panels: seven in one row made a 21-inch strip, illegible at a page's width
    fig, axes = panel_grid(len(keys), 3, 3.4)
    for ax, k in zip(axes, keys, strict=True):
        ax.plot(np.arange(len(rows)), _series(rows, k), "o-")
        ax.set_title(k, fontsize=9)
        if k in ("calinski_harabasz", "xie_beni"):
            ax.set_yscale("log")
        _layer_axes(ax, rows)
    fig.suptitle(f"cluster indices of {label!r} by layer")
    fig.tight_layout()
    return fig


def lens_figure(rows: list[dict]):
    plt = pyplot()
    lens = [r for r in rows if r.get("lens_kl") is not None]
    fig, a = plt.subplots(figsize=(6, 3.6))
    xs = np.arange(len(lens))
    a.plot(xs, _series(lens, "lens_top1_agreement"), "o-", label="top-1 = final layer's")
    if _has(lens, "lens_next_top1"):
        a.plot(xs, _series(lens, "lens_next_top1"), "s-", label="top-1 = next token")
    a.set_ylabel("fraction")
    b = a.twinx()
    b.plot(xs, _series(lens, "lens_kl"), "^--", color="tab:red", label="KL(final ‖ layer)")
    b.set_ylabel("nats")
    a.legend(fontsize=7, loc="center left")
    b.legend(fontsize=7, loc="center right")
    _layer_axes(a, lens)
    a.set_title("logit lens by layer")
    fig.tight_layout()
    return fig


def write_plots(out, rows: list[dict], outcomes: dict, label: str | None) -> list[str]:
    """Every plot whose statistics exist; the names written."""
    written = []
    figures = {"norms.png": (_has(rows, "mean_norm"), lambda: norms_figure(rows)),
               "sparsity.png": (_has(rows, "sparsity"), lambda: sparsity_figure(rows)),
               "clusters.png": (_has(rows, "calinski_harabasz"), lambda: clusters_figure(rows, label)),
               "logit_lens.png": (_has(rows, "lens_kl"), lambda: lens_figure(rows))}
    spectra = {h: o.tables["spectrum"] for h, o in outcomes.items() if o.tables.get("spectrum")}
    massive = {h: o.tables["massive"] for h, o in outcomes.items() if o.tables.get("massive")}
    figures["spectrum.png"] = (bool(spectra), lambda: spectrum_figure(spectra))
    figures["massive.png"] = (bool(massive), lambda: massive_figure(massive))
    for name, (present, make) in figures.items():
        if present:
            out.figure(name, make())
            written.append(name)
    return written
