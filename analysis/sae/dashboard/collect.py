"""Per-latent statistics over a stream of rows, in one pass and bounded memory: firing counts, activation sums
and maxima, a log-spaced activation histogram, the top rows, and a few rows per histogram bin (the quantile
samples are drawn from those). Receives encoded batches; does no I/O."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

#: activation histogram: log10 bins from 1e-4 to 1e4 (raw units), one more for anything above
EDGES = np.logspace(-4, 4, 49)
#: activation quantile bands a latent page shows, and rows sampled per (latent, bin): as many as bands, so that
#: bands sharing one bin (a latent whose values span a few bins) each get a row of their own
BANDS = 5


def fitted_hist(hist: np.ndarray) -> tuple[list[int], tuple[str, str]]:
    """A latent's activation histogram cut to the bins from its lowest to its highest filled one, with those
    bins' outer edges as labels (raw units): the whole 1e-4..1e4 range left the data a sliver of the axis. Bin i
    holds (EDGES[i-1], EDGES[i]]; the first starts at 0, the last (anything above 1e4) has no upper edge."""
    filled = np.flatnonzero(hist)
    if not len(filled):
        return [], ("", "")
    a, b = int(filled[0]), int(filled[-1])
    lo = "0" if a == 0 else f"{EDGES[a - 1]:.3g}"
    hi = f">{EDGES[-2]:.3g}" if b == len(EDGES) - 1 else f"{EDGES[b]:.3g}"
    return [int(c) for c in hist[a:b + 1]], (lo, hi)


@dataclass
class LatentTable:
    """What the index shows per latent, and what each latent page needs to pick its examples."""

    fires: np.ndarray  #: rows where the latent is active
    sum_act: np.ndarray
    max_act: np.ndarray
    hist: np.ndarray  #: (d_sae, bins) counts of active values per log bin
    top_rows: np.ndarray  #: (d_sae, n_top) global row indices, -1 where fewer fired
    top_values: np.ndarray
    #: (d_sae, bins, BANDS) rows drawn uniformly without replacement among those whose activation fell in that bin
    #: (-1 past the bin's count)
    bin_samples: np.ndarray
    rows: int

    @property
    def bin_rows(self) -> np.ndarray:
        """(d_sae, bins) one row drawn uniformly per bin (-1 where none fell)."""
        return self.bin_samples[..., 0]

    @property
    def frequency(self) -> np.ndarray:
        return self.fires / max(self.rows, 1)

    @property
    def mean_act(self) -> np.ndarray:
        return np.where(self.fires > 0, self.sum_act / np.maximum(self.fires, 1), 0.0)

    def to_npz(self) -> bytes:
        """The table as an ``.npz`` (arrays only, no pickle): `sae explain` keeps its pass for `sae dashboard`."""
        import io

        buf = io.BytesIO()
        np.savez(buf, **{f: getattr(self, f) for f in self.__dataclass_fields__ if f != "rows"},
                 rows=np.array(self.rows))
        return buf.getvalue()

    @classmethod
    def from_npz(cls, data: bytes) -> LatentTable:
        import io

        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            return cls(**{f: z[f] for f in cls.__dataclass_fields__ if f != "rows"}, rows=int(z["rows"]))

    def quantile_rows(self, latent: int, bands: int = BANDS) -> list[tuple[str, int]]:
        """A sample row per activation band, every band listed: band b holds the latent's active values of ranks
        [ceil(b n / bands), ceil((b + 1) n / bands)) (n values in all); its row is drawn from the bin holding the
        band's middle rank (the histogram is the resolution kept), -1 for a band holding no value (n < bands).
        Bands sharing a bin get distinct rows of it, in no order of activation (``bands`` <= ``BANDS``)."""
        h = self.hist[latent].astype(np.int64)
        n = int(h.sum())
        if n == 0:
            return []
        upto = np.cumsum(h)  # ranks [upto[i] - h[i], upto[i]) fell in bin i
        taken = dict.fromkeys(range(len(h)), 0)  #: samples of each bin used by lower bands
        out = []
        for b in range(bands):
            first, stop = -(-b * n // bands), -(-(b + 1) * n // bands)
            label, row = f"{100 * b // bands}-{100 * (b + 1) // bands} %", -1
            if first < stop:
                mid = int(np.searchsorted(upto, (first + stop - 1) // 2, side="right"))
                # the middle rank's bin first, then the band's other bins (nearest first) should it run out
                near = sorted((i for i in range(len(h)) if h[i] and upto[i] - h[i] < stop and upto[i] > first),
                              key=lambda i: abs(i - mid))
                for i in near:
                    pick = self.bin_samples[latent, i, taken[i]] if taken[i] < self.bin_samples.shape[2] else -1
                    if pick >= 0:
                        row, taken[i] = int(pick), taken[i] + 1
                        break
            out.append((label, row))
        return out


class LatentCollector:
    """Folds encoded batches ``z`` (rows × d_sae, zeros where inactive) into a ``LatentTable``."""

    def __init__(self, d_sae: int, n_top: int, seed: int = 0) -> None:
        self.d_sae, self.n_top, self.rows = d_sae, n_top, 0
        self.seen = 0  #: rows streamed so far, kept or not: the next batch's first global row index
        self.fires = torch.zeros(d_sae, dtype=torch.long)
        self.sum_act = torch.zeros(d_sae, dtype=torch.float64)
        self.max_act = torch.zeros(d_sae)
        self.hist = torch.zeros(d_sae, len(EDGES), dtype=torch.long)
        self.bin_samples = torch.full((d_sae, len(EDGES), BANDS), -1, dtype=torch.long)
        self.bin_keys = torch.full((d_sae, len(EDGES), BANDS), torch.inf)  #: the samples' random keys
        self.top_values = torch.full((d_sae, n_top), -torch.inf)
        self.top_rows = torch.full((d_sae, n_top), -1, dtype=torch.long)
        self.edges = torch.as_tensor(EDGES, dtype=torch.float32)
        self.gen = torch.Generator().manual_seed(seed)  #: the rows sampled per bin are the same on every build

    def add(self, z: torch.Tensor, keep: torch.Tensor | None = None) -> None:
        """Fold in the next rows' latents; ``keep`` (bool per row): only those rows count (rows the SAE was not
        trained on, below its --min-position, are neither counted, nor shown, nor sampled), while row indices
        still advance over every row."""
        z = z.float()
        if keep is not None:
            z = z * keep.to(z.device)[:, None]  # a left-out row fires nothing
        active = z > 0
        self.fires += active.sum(0)
        self.sum_act += z.sum(0).double()
        self.max_act = torch.maximum(self.max_act, z.max(0).values.clamp_min(0))
        row, lat = active.nonzero(as_tuple=True)
        bins = torch.bucketize(z[row, lat], self.edges).clamp_max(len(EDGES) - 1)
        self._sample_bins(lat, bins, row + self.seen)
        cand_v = torch.cat([self.top_values, z.t()], dim=1)
        cand_r = torch.cat([self.top_rows, torch.arange(self.seen, self.seen + len(z)).expand(self.d_sae, -1)], 1)
        self.top_values, pick = cand_v.topk(self.n_top, dim=1)
        self.top_rows = cand_r.gather(1, pick)
        self.seen += len(z)
        self.rows += len(z) if keep is None else int(keep.sum())

    def _sample_bins(self, lat: torch.Tensor, bins: torch.Tensor, rows: torch.Tensor) -> None:
        """Count the active values per (latent, bin) and keep ``BANDS`` rows per bin drawn uniformly without
        replacement from all rows seen so far (each value gets a random key; a bin keeps its lowest keys), so
        quantile samples spread over the dataset, not its last batch, and slot 0 alone is a uniform draw."""
        k = BANDS
        pair = lat * len(EDGES) + bins
        uniq, n_new = torch.unique(pair, return_counts=True)
        self.hist.view(-1).index_add_(0, uniq, n_new)
        keys, samples = self.bin_keys.view(-1, k), self.bin_samples.view(-1, k)
        cand_pair = torch.cat([pair, uniq.repeat_interleave(k)])
        cand_key = torch.cat([torch.rand(len(pair), generator=self.gen), keys[uniq].flatten()])
        cand_row = torch.cat([rows, samples[uniq].flatten()])
        order = torch.argsort(cand_key, stable=True)
        order = order[torch.argsort(cand_pair[order], stable=True)]  # by pair, then key
        sp = cand_pair[order]
        rank = torch.arange(len(sp)) - torch.searchsorted(sp, sp)  # place within its pair
        keep = rank < k  # every pair has at least k candidates (its k slots): each slot is written
        slot = sp[keep] * k + rank[keep]
        keys.view(-1)[slot] = cand_key[order][keep]
        samples.view(-1)[slot] = cand_row[order][keep]

    def table(self) -> LatentTable:
        keep = torch.isfinite(self.top_values) & (self.top_values > 0)
        return LatentTable(fires=self.fires.numpy(), sum_act=self.sum_act.numpy(), max_act=self.max_act.numpy(),
                           hist=self.hist.numpy(), top_rows=torch.where(keep, self.top_rows, -1).numpy(),
                           top_values=torch.where(keep, self.top_values, 0.0).numpy(),
                           bin_samples=self.bin_samples.numpy(), rows=self.rows)


def sae_digest(sae) -> str:
    """A digest of an SAE: every parameter and buffer (the decoder bias the encoder subtracts, a JumpReLU
    threshold) and its configuration (architecture, k): a kept collection pass or explanations are taken only for
    the same SAE."""
    import hashlib
    import json

    h = hashlib.sha256(json.dumps(sae.export_cfg(), sort_keys=True, default=str).encode())
    for name, t in sorted(sae.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().float().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()[:24]


def nearest_latents(w_dec: torch.Tensor, n: int = 8, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Per latent, the ``n`` other latents whose decoder rows are closest in cosine (ids, cosines); chunked so
    16k latents need 4096 × d_sae floats at a time, not d_sae²."""
    w = torch.nn.functional.normalize(w_dec.detach().float(), dim=1)
    ids, cos = [], []
    for a in range(0, len(w), chunk):
        sim = w[a:a + chunk] @ w.t()
        sim[torch.arange(len(sim)), torch.arange(a, a + len(sim))] = -2.0  # not itself
        v, i = sim.topk(min(n, len(w) - 1), dim=1)
        ids.append(i)
        cos.append(v)
    return torch.cat(ids).numpy(), torch.cat(cos).numpy()


def logit_effects(w_dec: torch.Tensor, unembed, n: int = 10) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per latent, the tokens its decoder row promotes and suppresses most through the unembedding, after the
    final norm's scale (W_dec · diag(g) · W_Uᵀ): (top ids, top values, bottom ids, bottom values)."""
    w = w_dec.detach().float()
    if unembed.norm_weight is not None:
        w = w * unembed.norm_weight.float()
    eff = w @ unembed.weight.float().t()
    top = eff.topk(n, dim=1)
    bottom = (-eff).topk(n, dim=1)
    return top.indices.numpy(), top.values.numpy(), bottom.indices.numpy(), (-bottom.values).numpy()
