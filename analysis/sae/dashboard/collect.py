"""Per-latent statistics over a stream of rows, in one pass and bounded memory: firing counts, activation sums
and maxima, a log-spaced activation histogram, the top rows, and one row per histogram bin (the quantile
samples are drawn from those). Receives encoded batches; does no I/O."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

#: activation histogram: log10 bins from 1e-4 to 1e4 (raw units), one more for anything above
EDGES = np.logspace(-4, 4, 49)


@dataclass
class LatentTable:
    """What the index shows per latent, and what each latent page needs to pick its examples."""

    fires: np.ndarray  #: rows where the latent is active
    sum_act: np.ndarray
    max_act: np.ndarray
    hist: np.ndarray  #: (d_sae, bins) counts of active values per log bin
    top_rows: np.ndarray  #: (d_sae, n_top) global row indices, -1 where fewer fired
    top_values: np.ndarray
    bin_rows: np.ndarray  #: (d_sae, bins) a row drawn uniformly among those whose activation fell in that bin
    rows: int

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

    def quantile_rows(self, latent: int, bands: int = 5) -> list[tuple[str, int]]:
        """One sample row per activation band (quantiles of the latent's active values, from the histogram)."""
        h = self.hist[latent]
        total = h.sum()
        if total == 0:
            return []
        cum = np.cumsum(h) / total
        out = []
        for b in range(bands):
            lo, hi = b / bands, (b + 1) / bands
            bins = [i for i in range(len(h)) if h[i] and cum[i] > lo and (cum[i - 1] if i else 0.0) < hi]
            row = next((int(self.bin_rows[latent, i]) for i in reversed(bins) if self.bin_rows[latent, i] >= 0), -1)
            if row >= 0 and all(row != r for _, r in out):  # two bands within one bin: show the row once
                out.append((f"{int(lo * 100)}-{int(hi * 100)} %", row))
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
        self.bin_rows = torch.full((d_sae, len(EDGES)), -1, dtype=torch.long)
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
        """Count the active values per (latent, bin) and keep one row per bin drawn uniformly from all rows seen
        so far (reservoir sampling of size one: this batch's n rows of a bin replace the kept one with
        probability n / total), so quantile samples spread over the dataset, not its last batch."""
        pair = lat * len(EDGES) + bins
        uniq, inverse, n_new = torch.unique(pair, return_inverse=True, return_counts=True)
        order = torch.randperm(len(pair), generator=self.gen)  # a random row of each pair in this batch
        pick = torch.full((len(uniq),), len(pair), dtype=torch.long).scatter_reduce(0, inverse[order], order, "amin")
        flat_hist = self.hist.view(-1)
        flat_hist.index_add_(0, uniq, n_new)
        replace = torch.rand(len(uniq), generator=self.gen) < n_new / flat_hist[uniq]
        self.bin_rows.view(-1)[uniq[replace]] = rows[pick[replace]]

    def table(self) -> LatentTable:
        keep = torch.isfinite(self.top_values) & (self.top_values > 0)
        return LatentTable(fires=self.fires.numpy(), sum_act=self.sum_act.numpy(), max_act=self.max_act.numpy(),
                           hist=self.hist.numpy(), top_rows=torch.where(keep, self.top_rows, -1).numpy(),
                           top_values=torch.where(keep, self.top_values, 0.0).numpy(),
                           bin_rows=self.bin_rows.numpy(), rows=self.rows)


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
