"""The detection and fuzzing scores of an explanation (delphi's classifier scorers): held-out activating and
non-activating contexts are shown to a scorer model with the explanation, in shuffled batches, and its 0/1
answers are compared with the truth. Builds the samples and reduces the answers; asks no model, does no I/O."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from analysis.interp.prompts import mark

FUZZ_THRESHOLD = 0.3  #: tokens at or above this fraction of the context's maximum are marked in fuzzing


@dataclass
class Ctx:
    """A context window: its tokens as text and the latent's activation on each."""

    tokens: list[str]
    acts: list[float]
    row: int = -1  #: the dataset row the window is centred on

    @property
    def max_act(self) -> float:
        return max(self.acts, default=0.0)


@dataclass
class Sample:
    """One example as a scorer sees it, and what the scorer said of it."""

    text: str
    activating: bool
    prediction: bool | None = None  #: None: the answer for its batch could not be read
    probability: float | None = None


def _fuzz_wrong(ctx: Ctx, n_incorrect: int) -> str:
    """A non-activating context with ``n_incorrect`` tokens marked at random (as delphi picks them: seed 22, and
    the token three quarters along always among them when it qualifies), so that a correct explanation rejects it."""
    below = [i for i, a in enumerate(ctx.acts) if a <= FUZZ_THRESHOLD * ctx.max_act]
    k = min(n_incorrect, len(below))
    rng = random.Random(22)
    pos = len(ctx.tokens) - len(ctx.tokens) // 4
    if pos in below:
        rest = [i for i in below if i != pos]
        chosen = {pos, *(rng.sample(rest, k - 1) if k > 1 else [])}
    else:
        chosen = set(rng.sample(below, k))
    return mark(ctx.tokens, chosen.__contains__)


def _detection(held_out: Sequence[Ctx], not_active: Sequence[Ctx]) -> list[Sample]:
    """Plain text: does the explanation tell the activating contexts from the others?"""
    return ([Sample("".join(c.tokens), False) for c in not_active]
            + [Sample("".join(c.tokens), True) for c in held_out])


def _fuzz(held_out: Sequence[Ctx], not_active: Sequence[Ctx]) -> list[Sample]:
    """Marked text: activating contexts with their active tokens marked against non-activating ones with as many
    tokens (the activating contexts' mean count of active tokens, rounded up) marked at random."""
    n_incorrect = math.ceil(sum(sum(a != 0 for a in c.acts) for c in held_out) / max(len(held_out), 1))
    wrong = [Sample(_fuzz_wrong(c, n_incorrect), False) for c in not_active]
    right = [Sample(mark(c.tokens, lambda i, c=c: c.acts[i] >= FUZZ_THRESHOLD * c.max_act), True)
             for c in held_out]
    return wrong + right


#: scorer name -> its samples from (held-out activating, non-activating) contexts; also the list of ``--scorers``
SCORERS: dict[str, Callable[[Sequence[Ctx], Sequence[Ctx]], list[Sample]]] = {"detection": _detection,
                                                                               "fuzz": _fuzz}


def samples_for(scorer: str, held_out: Sequence[Ctx], not_active: Sequence[Ctx]) -> list[Sample]:
    """The scorer's samples, non-activating first, in the order delphi builds them (so one seeded shuffle gives
    both the same batches)."""
    return SCORERS[scorer](held_out, not_active)


def batches(samples: list[Sample], per_prompt: int, seed: int) -> list[list[Sample]]:
    """The samples shuffled with ``seed`` and cut into prompts of ``per_prompt``."""
    order = list(samples)
    random.Random(seed).shuffle(order)
    return [order[i:i + per_prompt] for i in range(0, len(order), per_prompt)]


def auroc(labels: Sequence[bool], scores: Sequence[float]) -> float | None:
    """Area under the ROC curve (Mann–Whitney U with average ranks for ties); None without both classes."""
    pos = sum(labels)
    neg = len(labels) - pos
    if pos == 0 or neg == 0:
        return None
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    ranks = [0.0] * len(scores)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    u = sum(r for r, lab in zip(ranks, labels, strict=True) if lab) - pos * (pos + 1) / 2
    return u / (pos * neg)


@dataclass
class Score:
    """One latent's score under one scorer (``accuracy`` is class-balanced, as delphi reports it)."""

    latent: int
    scorer: str
    explanation: Literal["own", "random"]
    accuracy: float | None  #: None (all metrics): no answer of the scorer could be read
    precision: float | None
    recall: float | None
    f1: float | None
    auroc: float | None
    n: int  #: samples with an answer
    failed: int  #: samples whose batch's answer could not be read
    positives: int
    negatives: int
    confusion: dict[str, int] = field(default_factory=dict)


def score(latent: int, scorer: str, explanation: Literal["own", "random"], samples: Sequence[Sample]) -> Score:
    """Confusion counts and the classification metrics of the answered samples (delphi's definitions)."""
    done = [s for s in samples if s.prediction is not None]
    tp = sum(s.prediction and s.activating for s in done)
    tn = sum(not s.prediction and not s.activating for s in done)
    fp = sum(s.prediction and not s.activating for s in done)
    fn = sum(not s.prediction and s.activating for s in done)
    pos, neg = tp + fn, tn + fp
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / pos if pos else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    accuracy = ((tp / pos if pos else 0.0) + (tn / neg if neg else 0.0)) / 2
    probs = [s for s in samples if s.probability is not None]
    area = auroc([s.activating for s in probs], [s.probability for s in probs]) if probs else None
    if not done:  # nothing answered: no score, not a score of 0
        accuracy = precision = recall = f1 = None
    return Score(latent=latent, scorer=scorer, explanation=explanation, accuracy=accuracy, precision=precision,
                 recall=recall, f1=f1, auroc=area, n=len(done), failed=len(samples) - len(done), positives=pos,
                 negatives=neg, confusion={"tp": tp, "tn": tn, "fp": fp, "fn": fn})
