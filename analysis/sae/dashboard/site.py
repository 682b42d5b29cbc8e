"""The dashboard as static files, opened from disk or any static web server (no request leaves the site):

- ``index.html`` + ``index.js``: every latent in one sortable, searchable table; its rows come in parts
  (``index/part-K.js``, ``PART`` latents each) so the first paint costs the same at 4k or 100k latents;
- ``latent.html?l=N`` + ``latent.js``: one shared page that loads ``latents/N.js`` (that latent's data as compact
  JSON) on demand, as SAEDashboard moved to per-feature files; ~4x smaller than a pre-rendered page per latent;
- ``thumbs/E.jpg`` for image datasets, ``style.css``.

Scripts and styles ship with the package (``assets/``); pages build their DOM with ``textContent``, so text from
the corpus is never parsed as markup."""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from importlib.resources import files

import numpy as np

PART = 8192  #: latents per index part


def asset(name: str) -> str:
    """A script or style shipped in ``assets/``."""
    return files("analysis.sae.dashboard").joinpath("assets", name).read_text()


LATENT_HTML = ("<!doctype html><meta charset='utf-8'><title>latent</title><link rel='stylesheet' href='style.css'>"
               "<main id='page'></main><script src='latent.js'></script>")


@dataclass
class Context:
    """A row's tokens around it, each with the latent's activation; ``own`` is the row's index in ``tokens``."""

    label: str
    activation: float
    tokens: list[str]
    values: list[float]
    own: int


@dataclass
class Stimulus:
    """An image a latent page shows: its thumbnail ``thumbs/<example>.jpg``; ``grid``: the latent's activation
    per patch (rows × cols) for patch-level datasets."""

    label: str
    activation: float
    stimulus_id: str
    example: int
    grid: list[list[float]] | None = None


@dataclass
class LatentPage:
    latent: int
    frequency: float
    max_act: float
    mean_act: float
    hist: list[int]  #: active rows per activation bin, from the lowest filled bin to the highest
    edges: tuple[str, str] = ("", "")  #: those bins' outer edges (raw units)
    top: list[Context] = field(default_factory=list)
    quantiles: list[Context] = field(default_factory=list)
    nearest: list[tuple[int, float]] = field(default_factory=list)
    promoted: list[tuple[str, float]] = field(default_factory=list)
    suppressed: list[tuple[str, float]] = field(default_factory=list)
    explanation: str = ""
    scores: dict[str, float] = field(default_factory=dict)  #: `sae score` by scorer: own, and "<scorer> random"
    stimuli: list[Stimulus] = field(default_factory=list)
    stimulus_quantiles: list[Stimulus] = field(default_factory=list)


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def bars_svg(values, labels: tuple[str, str], axes: tuple[str, str] = ("", ""), width: int = 420,
             height: int = 90) -> str:
    """A bar chart as inline SVG (no library, no request): ``labels`` at the x axis' ends, ``axes`` the names of
    the x and y axes (with units)."""
    v = np.asarray(values, dtype=float)
    top = float(v.max()) if len(v) and v.max() > 0 else 1.0
    w = width / max(len(v), 1)
    left = 16  # room for the y axis' name, written upwards
    bars = "".join(f'<rect x="{left + i * w:.1f}" y="{height - h:.1f}" width="{max(w - 1, 1):.1f}" '
                   f'height="{h:.1f}" fill="#4a7bd0"><title>{int(c)}</title></rect>'
                   for i, c in enumerate(v) for h in [height * c / top])
    return (f'<svg class="hist" width="{width + left}" height="{height + 30}" role="img">{bars}'
            f'<text x="12" y="{height / 2:.0f}" font-size="11" text-anchor="middle" '
            f'transform="rotate(-90 12 {height / 2:.0f})">{_e(axes[1])}</text>'
            f'<text x="{left}" y="{height + 13}" font-size="11">{_e(labels[0])}</text><text x="{left + width}" '
            f'y="{height + 13}" font-size="11" text-anchor="end">{_e(labels[1])}</text>'
            f'<text x="{left + width / 2:.0f}" y="{height + 27}" font-size="11" text-anchor="middle">'
            f'{_e(axes[0])}</text></svg>')


def _r(v: float) -> float:
    """5 significant digits: what a page shows (4) and sorts by, at a third of the bytes of a float32's repr."""
    return float(f"{v:.5g}")


def latent_data(p: LatentPage) -> str:
    """``latents/N.js``: the latent's data as one call ``L({...})`` (JSON is valid JS; ASCII-only, so no line
    separator can end the statement)."""
    d = {"latent": p.latent, "frequency": _r(p.frequency), "max": _r(p.max_act), "mean": _r(p.mean_act),
         "hist": p.hist, "edges": list(p.edges), "explanation": p.explanation,
         "scores": {k: round(v, 4) for k, v in p.scores.items()},
         "nearest": [[n, round(c, 4)] for n, c in p.nearest],
         "promoted": [[t, round(v, 4)] for t, v in p.promoted],
         "suppressed": [[t, round(v, 4)] for t, v in p.suppressed]}
    if p.stimuli or p.stimulus_quantiles:
        stim = lambda rows: [[s.label, _r(s.activation), s.stimulus_id, s.example,  # noqa: E731
                              None if s.grid is None else [[_r(v) for v in row] for row in s.grid]] for s in rows]
        d.update(stimuli=stim(p.stimuli), stimulus_quantiles=stim(p.stimulus_quantiles))
    else:
        ctx = lambda rows: [[c.label, _r(c.activation), c.own, c.tokens, [_r(v) for v in c.values]]  # noqa: E731
                            for c in rows]
        d.update(top=ctx(p.top), quantiles=ctx(p.quantiles))
    return f"L({json.dumps(d, separators=(',', ':'))});\n"


def index_part(columns: list[str], rows: list[list]) -> str:
    """``index/part-K.js``: one part of the index' rows as a call ``A(columns, rows)``."""
    return f"A({json.dumps(columns, separators=(',', ':'))},{json.dumps(rows, separators=(',', ':'))});\n"


def index_html(title: str, columns: list[str], parts: int, density_svg: str, notes: str) -> str:
    """The index page: the table's head and the density plot; its rows come from ``parts`` part files."""
    heads = "".join(f"<th{' class=l' if i >= 5 else ''}>{_e(c)}</th>" for i, c in enumerate(columns))
    return (f"<!doctype html><meta charset='utf-8'><title>{_e(title)}</title><link rel='stylesheet' "
            f"href='style.css'><h1>{_e(title)}</h1><p class='v'>{_e(notes)}</p>"
            f"<h2>Firing density over latents</h2>{density_svg}"
            f"<p><input id='q' placeholder='latent id, token or explanation' size='36'> <span id='count'></span></p>"
            f"<table id='latents'><thead><tr>{heads}</tr></thead><tbody id='rows'></tbody></table>"
            f"<script>const TOTAL_PARTS={int(parts)};</script><script src='index.js'></script>")
