"""The dashboard's per-latent statistics against direct computations over all rows at once."""

from __future__ import annotations

import numpy as np
import torch

from analysis.sae.dashboard.collect import EDGES, LatentCollector, LatentTable, logit_effects, nearest_latents
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
        _check_bands(t, z[:, lat].numpy(), lat)


def _check_bands(t, values: np.ndarray, lat: int, bands: int = 5) -> None:
    """Every band shown, against the latent's own active values sorted: band b holds the ranks
    [ceil(b n / bands), ceil((b + 1) n / bands)); its row's value falls in a histogram bin holding some of those
    ranks (one active value per row: the bins are the resolution the pass keeps), and rows are distinct."""
    active = np.sort(values[values > 0])
    n = len(active)
    picks = t.quantile_rows(lat, bands)
    assert [label for label, _ in picks] == [f"{100 * b // bands}-{100 * (b + 1) // bands} %" for b in range(bands)]
    bins = np.clip(np.searchsorted(EDGES, active, side="left"), 0, len(EDGES) - 1)  # torch.bucketize's bins
    rows = [r for _, r in picks if r >= 0]
    assert len(set(rows)) == len(rows)
    for b, (_, r) in enumerate(picks):
        lo, hi = -(-b * n // bands), -(-(b + 1) * n // bands)
        if lo == hi:
            assert r == -1, (lat, b)  # an empty band says so
            continue
        assert r >= 0 and values[r] > 0, (lat, b)
        own = min(int(np.searchsorted(EDGES, values[r], side="left")), len(EDGES) - 1)
        assert own in set(bins[lo:hi].tolist()), (lat, b)


def test_every_quantile_band_gets_a_row():
    """Five bands of a latent whose values share one or two histogram bins: five distinct rows (before: one per
    bin, the other bands' rows dropped as repeats); a latent active on 3 rows: bands 40-60 % and 80-100 % hold no
    value and say so."""
    gen = torch.Generator().manual_seed(3)
    z = torch.zeros(3000, 3)
    z[:, 0] = 1.0 + 0.2 * torch.rand(3000, generator=gen)  # every value in (1, 1.468]: one bin
    z[::2, 1] = torch.rand(1500, generator=gen) * 1.5 + 0.5  # a few bins
    z[[10, 500, 2900], 2] = torch.tensor([0.3, 2.0, 7.0])
    c = LatentCollector(3, 2, seed=1)
    for a in range(0, 3000, 700):
        c.add(z[a:a + 700])
    t = c.table()
    for lat in range(3):
        _check_bands(t, z[:, lat].numpy(), lat)
    assert len({r for _, r in t.quantile_rows(0)}) == 5
    assert [r for _, r in t.quantile_rows(2)] == [10, 500, -1, 2900, -1]
    assert LatentTable.from_npz(t.to_npz()).quantile_rows(1) == t.quantile_rows(1)


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
