"""Synthetic activations with known features (after SAELens' SynthSAEBench): ground truth for comparing SAE
architectures.

Each row is ``x = Σ_i a_i f_i (+ noise)`` over ``n_features`` unit directions ``f_i`` in ``d`` dimensions (more
features than dimensions: superposition). Feature ``i`` fires with a Zipfian probability ``p_i ∝ 1 / (i + 1)^s``
scaled so that ``mean_active`` features fire per row on average, with magnitude ``|N(1, magnitude_std)|``. Two
kinds of structure real features have are planted on top:

- hierarchy: the first ``parents`` features each own ``children`` child features, which fire only when their
  parent fires (then with ``child_prob``, one child at most: mutually exclusive, as in SynthSAEBench);
- correlation: consecutive pairs among the next ``correlated_pairs * 2`` features fire together more often than
  chance (a Gaussian copula with correlation ``correlation``).

Rows are generated in chunks of ``CHUNK`` with a generator seeded by (seed, chunk index), so any row range can be
regenerated exactly from the config alone: ``sae evaluate --suite synthetic`` recovers the true activations of the
rows it evaluates without storing them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from shards.errors import ConfigError
from shards.records import JsonRecord

CHUNK = 16384
TRUTH_ARTIFACT = "synthetic_truth.safetensors"


@dataclass(kw_only=True)
class SyntheticConfig(JsonRecord):
    """The generator's settings (recorded with a synthetic dataset; the rows follow from them)."""

    d: int = 64
    """Dimensions of a row."""
    n_features: int = 512
    """True features (unit directions; more than d: superposition)."""
    mean_active: float = 6.0
    """Expected active features per row before the hierarchy's children."""
    zipf_exponent: float = 0.5
    """Firing probabilities fall as 1 / rank^s."""
    magnitude_std: float = 0.15
    """Std of an active feature's magnitude |N(1, s)|."""
    parents: int = 16
    """Features that own children (a hierarchy)."""
    children: int = 4
    """Children per parent; at most one fires, only with its parent."""
    child_prob: float = 0.5
    """Probability that a firing parent has a child firing."""
    correlated_pairs: int = 16
    """Pairs of features that fire together more often than chance."""
    correlation: float = 0.7
    """Correlation of each pair's Gaussian copula."""
    noise: float = 0.0
    """Std of isotropic Gaussian noise per dimension."""
    seed: int = 0
    """Seed of the features and the rows."""

    def __post_init__(self) -> None:
        """Checked before any work (``actlake sae synth`` builds it from its flags): each message names the flag
        (``--n-features``) and the values it takes."""
        for name in ("d", "n_features", "mean_active"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{_flag(name)} {getattr(self, name)}: must be positive")
        for name in ("parents", "children", "correlated_pairs", "magnitude_std", "noise"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"{_flag(name)} {getattr(self, name)}: must be 0 or more")
        for name, low in (("child_prob", 0.0), ("correlation", -1.0)):
            if not low <= getattr(self, name) <= 1:
                raise ConfigError(f"{_flag(name)} {getattr(self, name)}: give a value from {low:g} to 1")
        if self.parents and not self.children:
            raise ConfigError(f"--children 0 with --parents {self.parents}: give each parent 1 or more children, "
                              "or --parents 0 for no hierarchy")
        structured = self.parents * (1 + self.children) + 2 * self.correlated_pairs
        if structured > self.n_features:
            raise ConfigError(
                f"--n-features {self.n_features} is fewer than the {structured} structured features "
                f"(--parents {self.parents} x (1 + --children {self.children}) + 2 x --correlated-pairs "
                f"{self.correlated_pairs}): give --n-features {structured} or more, or lower --parents, "
                "--children or --correlated-pairs (0 turns a structure off)")

    @property
    def child_ids(self) -> np.ndarray:
        """(parents, children) ids of each parent's children (parents are 0 .. parents-1)."""
        start = self.parents
        return np.arange(start, start + self.parents * self.children).reshape(self.parents, self.children)


def _flag(name: str) -> str:
    """The command-line flag of a ``SyntheticConfig`` field (``n_features`` -> ``--n-features``)."""
    return "--" + name.replace("_", "-")


class SyntheticData:
    """The features and firing probabilities of a ``SyntheticConfig``; ``rows(start, stop)`` generates rows."""

    def __init__(self, cfg: SyntheticConfig) -> None:
        self.cfg = cfg
        rng = np.random.default_rng([cfg.seed, 0x5EED])
        f = rng.standard_normal((cfg.n_features, cfg.d))
        self.features = (f / np.linalg.norm(f, axis=1, keepdims=True)).astype(np.float32)
        ranks = rng.permutation(cfg.n_features)  # which feature gets which Zipf rank: no order to exploit
        p = 1.0 / (ranks + 1.0) ** cfg.zipf_exponent
        self.probs = np.minimum(p * cfg.mean_active / p.sum(), 0.95)
        self.free = np.ones(cfg.n_features, dtype=bool)
        self.free[cfg.child_ids.reshape(-1)] = False  # children fire through their parents only

    def _chunk(self, c: int) -> tuple[np.ndarray, np.ndarray]:
        """(x, true activations) of chunk ``c``: (CHUNK, d) float32 and (CHUNK, n_features) float32."""
        from scipy.special import ndtr

        cfg = self.cfg
        rng = np.random.default_rng([cfg.seed, c, 1])
        u = rng.random((CHUNK, cfg.n_features), dtype=np.float32)
        first = cfg.parents * (1 + cfg.children)
        for j in range(cfg.correlated_pairs):  # a Gaussian copula per pair: u_a, u_b correlated, marginals uniform
            a, b = first + 2 * j, first + 2 * j + 1
            g = rng.standard_normal((CHUNK, 2))
            g[:, 1] = cfg.correlation * g[:, 0] + np.sqrt(1 - cfg.correlation ** 2) * g[:, 1]
            u[:, a], u[:, b] = ndtr(g[:, 0]), ndtr(g[:, 1])
        on = (u < self.probs) & self.free
        pick = rng.integers(0, cfg.children, size=(CHUNK, max(cfg.parents, 1)))
        fire = rng.random((CHUNK, max(cfg.parents, 1))) < cfg.child_prob
        for par in range(cfg.parents):  # at most one child of a firing parent
            rows = np.nonzero(on[:, par] & fire[:, par])[0]
            on[rows, cfg.child_ids[par][pick[rows, par]]] = True
        acts = np.zeros((CHUNK, cfg.n_features), np.float32)
        r, c = np.nonzero(on)
        acts[r, c] = np.abs(1.0 + cfg.magnitude_std * rng.standard_normal(len(r), dtype=np.float32))
        x = acts @ self.features
        if cfg.noise:
            x += cfg.noise * rng.standard_normal(x.shape).astype(np.float32)
        return x.astype(np.float32), acts

    def rows(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows ``start .. stop-1``: (x, true activations)."""
        xs, acts = [], []
        for c in range(start // CHUNK, (stop - 1) // CHUNK + 1 if stop > start else start // CHUNK):
            x, a = self._chunk(c)
            lo, hi = max(start - c * CHUNK, 0), min(stop - c * CHUNK, CHUNK)
            xs.append(x[lo:hi])
            acts.append(a[lo:hi])
        if not xs:
            return np.empty((0, self.cfg.d), np.float32), np.empty((0, self.cfg.n_features), np.float32)
        return np.concatenate(xs), np.concatenate(acts)

    def take(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Arbitrary rows (global indices), generated chunk by chunk."""
        rows = np.asarray(rows, dtype=np.int64)
        xs = np.empty((len(rows), self.cfg.d), np.float32)
        acts = np.empty((len(rows), self.cfg.n_features), np.float32)
        for c in np.unique(rows // CHUNK):
            sel = np.nonzero(rows // CHUNK == c)[0]
            x, a = self._chunk(int(c))
            xs[sel], acts[sel] = x[rows[sel] - c * CHUNK], a[rows[sel] - c * CHUNK]
        return xs, acts

    def batches(self, batch_size: int, seed: int = 0):
        """Endless fresh rows in batches (for in-process benchmarks): chunks in a seeded order, never repeating."""
        buf = np.empty((0, self.cfg.d), np.float32)
        c = 1_000_000 + seed * 100_000  # chunk ids apart from a dataset's rows
        while True:
            while len(buf) < batch_size:
                buf = np.concatenate([buf, self._chunk(c)[0]])
                c += 1
            yield torch.from_numpy(buf[:batch_size].copy())
            buf = buf[batch_size:]


def truth_bytes(data: SyntheticData) -> bytes:
    """The features and the generator's config as a safetensors artifact (no pickle)."""
    import json

    from safetensors.numpy import save

    return save({"features": data.features, "probs": data.probs.astype(np.float32)},
                metadata={"config": json.dumps(dataclasses.asdict(data.cfg))})


def truth_from_bytes(raw: bytes) -> SyntheticData:
    """The generator a dataset's truth artifact records (checked against the stored features)."""
    import json

    from safetensors.numpy import load

    tensors = load(raw)
    header = json.loads(raw[8:8 + int.from_bytes(raw[:8], "little")])  # safetensors: u64 length, JSON header
    data = SyntheticData(SyntheticConfig(**json.loads(header["__metadata__"]["config"])))
    if not np.array_equal(data.features, tensors["features"]):
        raise ValueError("the stored synthetic features differ from the ones their config generates")
    return data


@dataclass(kw_only=True)
class SyntheticFit(JsonRecord):
    """One architecture trained on fresh synthetic rows and scored against the truth."""

    arch: str
    k: int | None
    d_sae: int
    steps: int
    fvu: float
    l0: float
    mcc: float
    uniqueness: float
    recovered: float
    precision: float
    recall: float
    seconds: float


def fit_synthetic(data: SyntheticData, arch: str, d_sae: int, k: int | None = None, steps: int = 1000,
                  batch_size: int = 2048, seed: int = 0, options=None, lr: float = 0.0,
                  eval_rows: int = 16384) -> tuple[object, SyntheticFit]:
    """Train ``arch`` on endless fresh rows (never the evaluation rows 0 .. eval_rows-1, which it is then scored
    on), the way ``sae train`` trains: inputs scaled to mean norm sqrt(d), b_dec at the geometric median, the
    default learning rate and schedule; the scale folded back at the end."""
    import math
    import time

    from analysis.sae.evals.core import core_metrics
    from analysis.sae.evals.synthetic import match, precision_recall
    from analysis.sae.registry import create_sae, get_architecture
    from analysis.sae.trainer import SaeSpec, SaeTrainer, Schedule, default_lr, geometric_median

    t0 = time.perf_counter()
    a = get_architecture(arch)
    sae = create_sae(a.name, data.cfg.d, d_sae, k if a.k_sparse else None, seed, options)
    with torch.no_grad():
        sae.W_enc.mul_(0.58)  # sae train's --encoder-init-norm default
    batches = data.batches(batch_size, seed)
    first = next(batches)
    scale = math.sqrt(data.cfg.d) / float(first.norm(dim=1).mean())
    if sae.uses_b_dec:
        with torch.no_grad():
            sae.b_dec.copy_(geometric_median(first[:4096] * scale))
    spec = SaeSpec(name="s", hook="x", arch=a.name, k=k, expansion=max(1, d_sae // data.cfg.d), d_in=data.cfg.d,
                   d_sae=d_sae, lr=lr or default_lr(d_sae))
    sched = Schedule(steps=steps, batch_size=batch_size, warmup=max(1, steps // 20), decay_frac=0.2,
                     dead_tokens=max(batch_size, steps * batch_size // 10), log_every=max(1, steps // 20))
    trainer = SaeTrainer([spec], {"s": sae}, {"x": scale}, sched)
    trainer.fit(({"x": b}, None) for b in batches)
    sae.fold_input_scale(scale)
    sae.eval()
    x, acts = data.rows(0, eval_rows)
    xt = torch.from_numpy(x)
    ev, _ = core_metrics(sae, [xt])
    with torch.no_grad():
        z_on = (sae.encode(xt) != 0).numpy()
    m, lat, feat = match(sae.W_dec.detach().numpy(), data.features, alive=z_on.any(0))
    prec, rec = precision_recall(z_on, acts > 0, lat, feat)
    return sae, SyntheticFit(arch=a.name, k=k if a.k_sparse else None, d_sae=d_sae, steps=steps, fvu=ev.fvu,
                             l0=ev.l0, mcc=m.mcc, uniqueness=m.uniqueness, recovered=m.recovered,
                             precision=float(np.nanmean(prec)), recall=float(np.nanmean(rec)),
                             seconds=round(time.perf_counter() - t0, 2))
