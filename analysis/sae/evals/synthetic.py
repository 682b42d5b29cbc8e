"""``synthetic``: how well an SAE trained on synthetic data (``actlake sae synth``) recovered the planted features.

- MCC: the mean |cosine| between decoder rows and true feature directions over a one-to-one matching that
  maximises it (Hungarian, scipy's ``linear_sum_assignment``), averaged over the true features (a feature left
  without a latent counts 0, so a dictionary narrower than the truth cannot score by matching only the easy
  features); SynthSAEBench's mean correlation coefficient;
- uniqueness: among latents that fire, the share of distinct true features their best matches cover (1: no two
  latents learned the same feature; duplicates and absorbed mixtures lower it);
- per matched latent, precision P(feature on | latent on) and recall P(latent on | feature on) on the evaluated
  rows, whose true activations are regenerated from the generator's recorded config;
- recovered: true features matched by a latent with |cos| >= 0.9.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from analysis.sae.evals.registry import EvalInputError, EvalInputs, EvalMetric, EvalOutcome, register
from shards.records import JsonRecord

RECOVERED_COS = 0.9


@dataclass(kw_only=True)
class Matching(JsonRecord):
    mcc: float
    uniqueness: float
    recovered: float  #: share of true features matched at |cos| >= 0.9


def cosines(w_dec: np.ndarray, features: np.ndarray) -> np.ndarray:
    """|cos| between every decoder row (d_sae, d) and every true feature (n_features, d)."""
    a = w_dec / np.maximum(np.linalg.norm(w_dec, axis=1, keepdims=True), 1e-12)
    b = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    return np.abs(a @ b.T)


def match(w_dec: np.ndarray, features: np.ndarray, alive: np.ndarray | None = None
          ) -> tuple[Matching, np.ndarray, np.ndarray]:
    """The matching's summary and its (latent ids, feature ids) pairs; ``alive``: latents that fire (uniqueness
    counts those only)."""
    from scipy.optimize import linear_sum_assignment

    cos = cosines(w_dec, features)
    lat, feat = linear_sum_assignment(cos, maximize=True)
    per_feature = np.zeros(features.shape[0])
    per_feature[feat] = cos[lat, feat]
    return Matching(mcc=float(cos[lat, feat].sum() / features.shape[0]), uniqueness=uniqueness(cos, alive),
                    recovered=float((per_feature >= RECOVERED_COS).mean())), lat, feat


def uniqueness(cos: np.ndarray, alive: np.ndarray | None = None) -> float:
    """Distinct true features among the best matches of the (alive) latents, per latent."""
    rows = cos if alive is None else cos[alive]
    return float(len(np.unique(rows.argmax(1))) / len(rows)) if len(rows) else 0.0


def precision_recall(z_on: np.ndarray, true_on: np.ndarray, lat: np.ndarray, feat: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Per matched pair: precision P(feature on | latent on), recall P(latent on | feature on) (NaN where the
    latent, or the feature, never fired)."""
    zl, tf = z_on[:, lat].astype(np.float64), true_on[:, feat].astype(np.float64)
    both = (zl * tf).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return both / zl.sum(0), both / tf.sum(0)


def run(inputs: EvalInputs, batch_size: int = 16384) -> EvalOutcome:
    """Score the SAE against the truth; batches of the generator's chunk size, so that contiguous rows regenerate
    each chunk once."""
    data = inputs.synthetic
    if data is None:
        raise EvalInputError(f"the synthetic evaluation needs a dataset made by `actlake sae synth` (it stores the "
                             f"true features); {inputs.hook!r}'s dataset has none")
    sae = inputs.sae
    w = sae.W_dec.detach().float().numpy()
    if w.shape[1] != data.features.shape[1]:
        raise EvalInputError(f"the SAE writes {w.shape[1]} dimensions, the synthetic features have "
                             f"{data.features.shape[1]}")
    # matched on the decoder alone, then one streamed pass counts firing: no (rows x latents) array is kept
    m, lat, feat = match(w, data.features)
    alive = np.zeros(w.shape[0], dtype=bool)
    both = np.zeros(len(lat))
    z_count, t_count = np.zeros(len(lat)), np.zeros(len(lat))
    with torch.no_grad():
        for i in range(0, len(inputs.rows), batch_size):
            rows = inputs.rows[i:i + batch_size]
            z_on = (sae.encode(inputs.read(rows, [])["x"]) != 0).numpy()
            t_on = data.take(rows)[1][:, feat] > 0
            alive |= z_on.any(0)
            zl = z_on[:, lat]
            both += (zl & t_on).sum(0)
            z_count += zl.sum(0)
            t_count += t_on.sum(0)
    m.uniqueness = uniqueness(cosines(w, data.features), alive)
    with np.errstate(invalid="ignore", divide="ignore"):
        prec, rec = both / z_count, both / t_count
    cos = cosines(w, data.features)[lat, feat]
    summary = {**m.to_json(), "precision": float(np.nanmean(prec)), "recall": float(np.nanmean(rec)),
               "rows": len(inputs.rows), "n_features": int(data.features.shape[0]), "d_sae": int(w.shape[0])}
    return EvalOutcome(summary=summary, tables={"synthetic_matching.parquet": {
        "latent": lat, "feature": feat, "cos": cos, "precision": prec, "recall": rec,
        "feature_prob": data.probs[feat]}})


register(EvalMetric("synthetic", run, "ground truth of a synthetic dataset: MCC (Hungarian), uniqueness, recovered "
                                      "features, per-latent precision/recall", order=40,
                    missing=lambda inputs: None if inputs.synthetic is not None else "not a synthetic dataset"))
