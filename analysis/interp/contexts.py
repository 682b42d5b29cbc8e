"""Each selected latent's contexts, from the dashboard's two passes over the dataset: the collection pass (top
rows and one row per activation bin, ``LatentCollector``) and the pass that reads the activation of every token
shown. Per latent: the contexts shown to the explainer (top activating, then activation-quantile samples), held-out
activating contexts for scoring (never shown to the explainer) and non-activating contexts (random windows where
the latent is zero on every token). Receives the SAE and the pinned dataset; writes nothing."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field

import numpy as np

from analysis.interp.scoring import Ctx

log = logging.getLogger("actlake.sae")


@dataclass
class LatentContexts:
    """What ``sae explain`` shows of one latent and what ``sae score`` tests its explanation on."""

    latent: int
    frequency: float
    max_act: float
    shown: list[Ctx] = field(default_factory=list)
    held_out: list[Ctx] = field(default_factory=list)
    not_active: list[Ctx] = field(default_factory=list)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> LatentContexts:
        ctxs = {k: [Ctx(**c) for c in d[k]] for k in ("shown", "held_out", "not_active")}
        return cls(int(d["latent"]), float(d["frequency"]), float(d["max_act"]), **ctxs)


@dataclass(frozen=True)
class ContextPlan:
    """How many contexts of each kind, and how wide."""

    top: int = 10
    quantiles: int = 5
    held_out: int = 10
    not_active: int = 10
    context: int = 12
    seed: int = 0

    @property
    def n_top(self) -> int:
        """Top rows the collection pass keeps per latent: twice what is shown and held out, as neighbouring rows
        of one context are among them."""
        return 2 * (self.top + self.held_out)


def _distinct(rows, view, taken: list[int], want: int) -> list[int]:
    """Up to ``want`` of ``rows`` (in order) whose windows overlap neither each other nor ``taken``'s."""
    out = []
    for r in (int(r) for r in rows if r >= 0):
        if len(out) >= want:
            break
        e, near = view.example_id[r], view.context * 2
        if all(view.example_id[t] != e or abs(t - r) > near for t in [*taken, *out]):
            out.append(r)
    return out


def pick_rows(table, view, latent: int, plan: ContextPlan, n_rows: int, kept, rng) -> tuple[list, list, list]:
    """(shown, held-out, non-activating candidate) rows of one latent. Shown: the top rows, then rows of the
    lower activation quantiles; held out: the next top rows and the other activation bins' rows, alternately, so
    the scores test the explanation over the latent's whole range (delphi's quantile test set) on contexts the
    explainer never saw."""
    shown = _distinct(table.top_rows[latent], view, [], plan.top)
    quant = [r for _, r in table.quantile_rows(latent)][::-1]  # the lowest band first
    shown += _distinct(quant, view, shown, plan.quantiles)
    bins = [int(r) for r in table.bin_rows[latent][::-1] if r >= 0]  # high activations first
    rest_top = [int(r) for r in table.top_rows[latent] if r >= 0]
    mixed = [r for pair in zip(rest_top, bins, strict=False) for r in pair]
    mixed += rest_top[len(bins):] + bins[len(rest_top):]
    held = _distinct(mixed, view, shown, plan.held_out)
    cand = rng.choice(n_rows, size=min(n_rows, plan.not_active * 8), replace=False) if n_rows else []
    cand = [int(r) for r in cand if kept is None or kept[r]]
    return shown, held, _distinct(cand, view, shown + held, plan.not_active * 8)


def collect(sae, ds, hook: str, latents: list[int], plan: ContextPlan, view, table, *, batch_size: int = 4096,
            min_position: int = 0) -> list[LatentContexts]:
    """The contexts of ``latents``. ``view``: the dashboard's ``TextView`` (token text and windows); ``table``:
    the collection pass's ``LatentTable`` with ``plan.n_top`` top rows per latent."""
    from analysis.sae.dashboard.run import _pair_values
    from analysis.sae.dashboard.views import with_packing

    view = with_packing(view, ds)  # a packed dataset's windows stop at its contexts' boundaries too
    n_rows = len(view.example_id)
    kept = None
    if min_position:
        from shards.columns import POSITION

        kept = ds.metadata_table([POSITION]).column(POSITION).to_numpy() >= min_position
    picks = {}
    for lat in latents:
        rng = np.random.default_rng([plan.seed, lat])
        picks[lat] = pick_rows(table, view, lat, plan, n_rows, kept, rng) if table.fires[lat] else ([], [], [])
    rows, lats = [], []
    for lat, groups in picks.items():
        for r in (r for g in groups for r in g):
            span = view.span(r)
            rows += span
            lats += [lat] * len(span)
    rows_a, lats_a = np.asarray(rows, dtype=np.int64), np.asarray(lats, dtype=np.int64)
    order = np.argsort(rows_a, kind="stable")
    values = _pair_values(sae, ds, hook, rows_a[order], lats_a[order], batch_size, min_position)

    def ctx(r: int, lat: int) -> Ctx:
        span = view.span(r)
        return Ctx([view.tokens(int(view.token_id[q])) for q in span], [values[(q, lat)] for q in span], r)

    out = []
    for lat, (shown, held, cand) in picks.items():
        quiet = [c for c in (ctx(r, lat) for r in cand) if c.max_act == 0][:plan.not_active]
        out.append(LatentContexts(lat, float(table.frequency[lat]), float(table.max_act[lat]),
                                  [ctx(r, lat) for r in shown], [ctx(r, lat) for r in held], quiet))
    return out
