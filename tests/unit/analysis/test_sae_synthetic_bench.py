"""Every architecture on the synthetic benchmark (known features: Zipfian firing, a hierarchy, correlated pairs), at
the same width and about the same L0: each recovers the truth above a threshold, and wrong settings score visibly
lower -- the metric can fail. docs/benchmarks.md has the full-size table (tests/benchmarks/bench_sae_synthetic.py).
"""

from __future__ import annotations

import numpy as np
import pytest

from analysis.sae.registry import get_architecture
from analysis.sae.synthetic import SyntheticConfig, SyntheticData, fit_synthetic

DATA = SyntheticConfig(d=32, n_features=128, mean_active=4, parents=4, children=3, correlated_pairs=4, seed=1)
#: (arch, options, MCC threshold); relu's L1 and jumprelu's L0 coefficients give L0 ~ 4-6 here, as k = 4 does
CASES = [("topk", {}, 0.88), ("batchtopk", {}, 0.7), ("matryoshka", {}, 0.6), ("mp", {}, 0.85),
         ("snmf", {}, 0.85), ("relu", {"l1_coeff": 4.0}, 0.6), ("jumprelu", {"l0_coeff": 1.0}, 0.7)]


class _ChunksOnce(SyntheticData):
    """The generator, each chunk of rows generated once for this file: every fit trains on the same stream of rows
    (seed 0) and is scored on the same rows, so the fits read the same arrays the generator returned the first time
    (a third of a small fit's time was spent generating them again)."""

    def __init__(self, cfg: SyntheticConfig) -> None:
        super().__init__(cfg)
        self.chunks: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # freed with the module's fixture

    def _chunk(self, c: int) -> tuple[np.ndarray, np.ndarray]:
        if c not in self.chunks:
            x, acts = super()._chunk(c)
            x.flags.writeable = acts.flags.writeable = False  # shared by every fit: none may change them
            self.chunks[c] = x, acts
        return self.chunks[c]


@pytest.fixture(scope="module")
def data():
    return _ChunksOnce(DATA)


@pytest.fixture(scope="module")
def train(data):
    """``train(arch, k, d_sae, **options)``: trained and scored once per file for the same settings (the wrong-settings
    test compares against the topk fit of the recovery test; training is deterministic, so it is the same fit)."""
    fits = {}

    def train(arch, k=4, d_sae=128, **options):
        key = (arch, k, d_sae, tuple(sorted(options.items())))
        if key not in fits:
            a = get_architecture(arch)
            fits[key] = fit_synthetic(data, arch, d_sae, k, steps=800, batch_size=1024,
                                      options=a.options(**options))[1]
        return fits[key]

    return train


@pytest.mark.parametrize("arch,options,threshold", CASES, ids=[c[0] for c in CASES])
def test_each_architecture_recovers_the_planted_features(train, arch, options, threshold):
    fit = train(arch, **options)
    assert fit.mcc >= threshold, fit
    assert 2 <= fit.l0 <= 8  # comparable sparsity (the data has ~4.3 active features per row)


def test_wrong_settings_score_visibly_lower(train):
    right = train("topk", k=4)
    assert right.mcc >= 0.88
    dense = train("topk", k=16)  # 4x the true L0: features smear across latents
    narrow = train("topk", k=4, d_sae=32)  # a quarter of the features have a latent
    assert dense.mcc < right.mcc - 0.2 and narrow.mcc < right.mcc - 0.4
