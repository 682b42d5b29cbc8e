"""The dashboard's per-latent statistics against direct computations over all rows at once."""

from __future__ import annotations

import numpy as np
import torch

from analysis.sae.dashboard.collect import EDGES, LatentCollector, logit_effects, nearest_latents
from shards.unembed import Unembed


def test_streamed_statistics_equal_the_whole_matrix():
    gen = torch.Generator().manual_seed(0)
    z = torch.relu(torch.randn(1000, 12, generator=gen) * 3 - 2)
    c = LatentCollector(12, 4)
    for a in range(0, 1000, 128):  # batches of unequal size at the end
        c.add(z[a:a + 128])
    t = c.table()
    np.testing.assert_array_equal(t.fires, (z > 0).sum(0).numpy())
    np.testing.assert_allclose(t.max_act, z.max(0).values.numpy())
    np.testing.assert_allclose(t.mean_act, (z.sum(0) / (z > 0).sum(0)).numpy(), rtol=1e-6)
    np.testing.assert_array_equal(t.top_rows, z.topk(4, dim=0).indices.t().numpy())
    want = np.stack([np.histogram(z[:, j][z[:, j] > 0].numpy(), bins=np.r_[EDGES, np.inf])[0] for j in range(12)])
    np.testing.assert_array_equal(t.hist[:, 1:].sum(1), want.sum(1))  # every active value in one bin
    for lat in range(12):
        picks = t.quantile_rows(lat)
        assert len(picks) >= 3 and all(z[r, lat] > 0 for _, r in picks)
        vals = [float(z[r, lat]) for _, r in picks]
        assert vals == sorted(vals)  # higher bands, higher activations


def test_nearest_latents_and_logit_effects():
    w = torch.randn(50, 16, generator=torch.Generator().manual_seed(1))
    ids, cos = nearest_latents(w, n=3, chunk=7)
    wn = torch.nn.functional.normalize(w, dim=1)
    sim = wn @ wn.t()
    sim.fill_diagonal_(-2)
    np.testing.assert_array_equal(ids, sim.topk(3, dim=1).indices.numpy())
    np.testing.assert_allclose(cos, sim.topk(3, dim=1).values.numpy(), rtol=1e-5)
    g, wu = torch.rand(16) + 0.5, torch.randn(30, 16)
    up_ids, up, down_ids, down = logit_effects(w, Unembed(weight=wu, norm="rmsnorm", norm_weight=g), n=4)
    eff = (w * g) @ wu.t()
    np.testing.assert_array_equal(up_ids, eff.topk(4, dim=1).indices.numpy())
    np.testing.assert_allclose(down, (-(-eff).topk(4, dim=1).values).numpy(), rtol=1e-5)
    assert (down.max(1) <= up.min(1)).all()


def test_quantile_rows_are_drawn_from_the_whole_stream():
    """The row kept per activation bin is uniform over every row that fell in it, whatever batch it came in
    (before: the last batch's row always won, so every sample of a latent came from the dataset's end)."""
    z = torch.ones(100, 1)  # one latent, every row in one bin
    kept = []
    for seed in range(3000):
        c = LatentCollector(1, 1, seed=seed)
        for a in range(0, 100, 10):
            c.add(z[a:a + 10])
        kept.append(c.table().bin_rows[0][c.table().hist[0] > 0][0])
    deciles = np.bincount(np.asarray(kept) // 10, minlength=10) / len(kept)
    np.testing.assert_allclose(deciles, 0.1, atol=0.025)  # 3000 draws: sd of a decile's share is 0.0055
