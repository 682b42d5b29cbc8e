"""``report.html`` of ``sae explain`` (each latent's explanation beside its top context) and ``sae score`` (the
scores' distributions against the random-explanation baseline, a sortable table per latent). Pure rendering."""

from __future__ import annotations

from analysis.common.plots import figure_png, pyplot
from analysis.common.report_page import ReportFigure, ReportTable, RunReport, report_html
from analysis.interp.prompts import mark_active


def explain_page(summary: dict, rows: list[dict], contexts: list) -> str:
    ctx = {c.latent: c for c in contexts}
    table = []
    for r in rows:
        c = ctx[r["latent"]]
        top = mark_active(c.shown[0].tokens, c.shown[0].acts, 0.3) if c.shown else ""
        table.append([r["latent"], round(c.frequency, 6), round(c.max_act, 3), r["explanation"], top])
    return report_html(RunReport("sae explain", summary.get("out", ""), {}, summary,
                                 [ReportTable("explanations", ["latent", "frequency", "max", "explanation",
                                                               "top context"], table, len(table))]))


def _histograms(scores) -> bytes | None:
    scorers = sorted({s.scorer for s in scores})
    if not scorers:
        return None
    plt = pyplot()
    fig, axes = plt.subplots(1, len(scorers), figsize=(5 * len(scorers), 4.2), squeeze=False)
    for ax, scorer in zip(axes[0], scorers, strict=True):
        for which, colour in (("own", "tab:blue"), ("random", "tab:grey")):
            acc = [s.accuracy for s in scores if s.scorer == scorer and s.explanation == which
                   and s.accuracy is not None]
            if acc:
                ax.hist(acc, bins=[i / 20 for i in range(21)], alpha=0.6, color=colour,
                        label=f"{which} explanation (mean {sum(acc) / len(acc):.3f}, n={len(acc)})")
        ax.axvline(0.5, color="k", lw=0.8, ls=":")
        ax.set_xlabel(f"{scorer}: balanced accuracy per latent (0.5: chance)")
        ax.set_ylabel("latents")
        ax.yaxis.get_major_locator().set_params(integer=True)
        ax.set_xlim(0, 1)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(0, -0.22), ncol=1, frameon=False)
    fig.tight_layout()
    return figure_png(fig)


def score_page(summary: dict, scores, expl: dict) -> str:
    by = {}
    for s in scores:
        by.setdefault(s.latent, {})[(s.scorer, s.explanation)] = s
    scorers = sorted({s.scorer for s in scores})
    aurocs = any(s.auroc is not None for s in scores)
    metrics = ("accuracy", "f1", "auroc", "random") if aurocs else ("accuracy", "f1", "random")
    columns = ["latent", "explanation"] + [f"{sc} {m}" for sc in scorers for m in metrics]
    rows = []
    for lat, got in sorted(by.items()):
        row = [lat, expl[lat]["explanation"]]
        for sc in scorers:
            own, rnd = got.get((sc, "own")), got.get((sc, "random"))
            r = lambda v: None if v is None else round(v, 3)  # noqa: E731 - no score: an empty cell
            row += [r(own.accuracy) if own else None, r(own.f1) if own else None,
                    *([r(own.auroc) if own else None] if aurocs else []), r(rnd.accuracy) if rnd else None]
        rows.append(row)
    png = _histograms(scores)
    figs = [ReportFigure("accuracy.png", png)] if png else []
    return report_html(RunReport("sae score", summary.get("out", ""), {"config": summary.get("settings", {})},
                                 summary, [ReportTable("scores", columns, rows, len(rows))], figs))
