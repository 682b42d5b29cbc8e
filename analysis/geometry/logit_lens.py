"""Logit lens (nostalgebraist 2020): each residual hook's rows through the model's final norm and unembedding,
compared with what the model itself predicts from its last layer. On the run's seeded sample of rows: the
unembedding costs vocab × d per row, too much for every row of a large dataset.

Per hook: ``lens_top1_agreement`` (the hook's top-1 token equals the final layer's), ``lens_kl`` (mean
KL(p_final ‖ p_hook) in nats), ``lens_next_top1`` and ``lens_next_rank_median`` (rank of the actual next token
among the hook's logits, 1 = top; rows whose next token is in the same example).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from analysis.geometry.registry import Definition, Sample, SampleOnly, Statistic, StatResult, register
from shards.unembed import Unembed

SOURCE = "nostalgebraist 2020, interpreting GPT: the logit lens"
CHUNK = 256


@dataclass
class LensInputs:
    """What every hook's lens shares: the unembedding, the final layer's rows and the next tokens of the sample."""

    unembed: Unembed
    final_hook: str
    final_x: torch.Tensor  #: float32 (s, d): the last block's output at the sample rows
    next_token: np.ndarray  #: (s,) int64, -1 where the row ends its example


def lens_scores(unembed: Unembed, x: torch.Tensor, final_x: torch.Tensor, next_token: np.ndarray) -> dict:
    """Agreement, KL and next-token rank of rows ``x`` against the final layer's rows ``final_x``."""
    agree, kl, ranks = 0, 0.0, []
    nxt = torch.as_tensor(next_token, dtype=torch.long)
    with torch.no_grad():
        for i in range(0, len(x), CHUNK):
            lp = torch.log_softmax(unembed.logits(x[i:i + CHUNK].float()).double(), dim=-1)
            lf = torch.log_softmax(unembed.logits(final_x[i:i + CHUNK].float()).double(), dim=-1)
            agree += int((lp.argmax(-1) == lf.argmax(-1)).sum())
            kl += float((lf.exp() * (lf - lp)).sum())
            t = nxt[i:i + CHUNK]
            has = t >= 0
            if has.any():
                own = lp[has].gather(1, t[has, None])
                ranks.append((lp[has] > own).sum(-1).numpy() + 1)
    n = max(len(x), 1)
    r = np.concatenate(ranks) if ranks else np.zeros(0)
    return {"lens_top1_agreement": agree / n, "lens_kl": kl / n,
            "lens_next_top1": float((r == 1).mean()) if len(r) else None,
            "lens_next_rank_median": float(np.median(r)) if len(r) else None}


class LensAccumulator(SampleOnly):
    def finish(self, sample: Sample) -> StatResult:
        lens: LensInputs = sample.lens
        out = StatResult()
        out.scalars.update(lens_scores(lens.unembed, torch.from_numpy(sample.x), lens.final_x, lens.next_token))
        out.definitions.update(
            lens_top1_agreement=Definition(f"fraction of rows whose top-1 token equals {lens.final_hook}'s (the "
                                           "model's own prediction)", SOURCE, exact=False),
            lens_kl=Definition(f"mean KL(p_{lens.final_hook} ‖ p_hook) in nats", SOURCE, exact=False),
            lens_next_top1=Definition("fraction of rows whose top-1 token is the actual next token", SOURCE,
                                      exact=False),
            lens_next_rank_median=Definition("median rank of the actual next token (1 = top)", SOURCE, exact=False))
        return out


register(Statistic("logit_lens", "final norm + unembedding per residual hook: agreement with the last layer, KL, "
                                 "next-token rank (causal LMs)",
                   lambda ctx: LensAccumulator(ctx) if ctx.lens else None, order=80))
