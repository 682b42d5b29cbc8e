"""``core``: reconstruction and sparsity on the evaluated rows (``analysis.sae.evals.core``), with the
firing-density histogram."""

from __future__ import annotations

import numpy as np

from analysis.sae.evals.core import core_metrics
from analysis.sae.evals.registry import EvalInputs, EvalMetric, EvalOutcome, register


def density_figure(freq: np.ndarray, title: str):
    """Histogram of log10 firing frequency, dead latents counted in the title."""
    from analysis.common.plots import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    alive = freq[freq > 0]
    if alive.size:
        ax.hist(np.log10(alive), bins=50)
    ax.set_xlabel("log10 firing frequency (fraction of rows)")
    ax.set_ylabel("latents")
    ax.set_title(f"{title}: {int((freq == 0).sum())} of {freq.size} latents never fired")
    fig.tight_layout()
    return fig


def run(inputs: EvalInputs, batch_size: int = 4096) -> EvalOutcome:
    def batches():
        for i in range(0, len(inputs.rows), batch_size):
            got = inputs.read(inputs.rows[i:i + batch_size], [])
            yield (got["x"], got["y"]) if "y" in got else got["x"]  # a transcoder reconstructs its target

    ev, freq = core_metrics(inputs.sae, batches())
    return EvalOutcome(summary=ev.to_json(), tables={"latent_density.parquet": {
        "latent": np.arange(len(freq)), "frequency": freq}},
        figures={"latent_density.png": density_figure(freq, inputs.hook)})


register(EvalMetric("core", run, "explained variance, cosine, L2 ratio, relative reconstruction bias, L0/L1, "
                                 "dead/dense fractions at several thresholds, density histogram", order=10))
