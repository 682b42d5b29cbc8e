"""The probe plot: score by layer with its 95 % interval, the control task and concept depth."""

from __future__ import annotations

from analysis.common.plots import pyplot
from analysis.probe.summary import ConceptDepth, HookSummary


def accuracy_figure(hooks: dict[str, HookSummary], metric: str, label: str, depth: ConceptDepth,
                    chance: float | None = None):
    """Metric vs layer (hooks in layer order): mean over folds, 95 % t-interval band, control line."""
    plt = pyplot()
    names = list(hooks)
    xs = range(len(names))
    mean = [hooks[h].mean for h in names]
    fig, ax = plt.subplots(figsize=(max(5.0, 0.6 * len(names) + 2), 3.8))
    ax.fill_between(xs, [hooks[h].ci95[0] for h in names], [hooks[h].ci95[1] for h in names], alpha=0.25,
                    label="95% CI (folds)")
    ax.plot(xs, mean, "o-", label=f"probe {metric}")
    if any(hooks[h].control_mean is not None for h in names):
        ax.plot(xs, [hooks[h].control_mean for h in names], "s--", color="gray", label="control task")
    if chance is not None:
        ax.axhline(chance, color="black", lw=0.8, ls=":", label="majority class")
    if depth.hook in names:
        ax.axvline(names.index(depth.hook), color="tab:red", lw=1, ls="--",
                   label=f"concept depth ({depth.threshold:g} x best)")
    ax.set_xticks(list(xs), names, rotation=45, ha="right")
    ax.set_ylabel(metric)
    ax.set_title(f"probing {label!r} by layer")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
