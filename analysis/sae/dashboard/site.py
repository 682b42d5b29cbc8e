"""The dashboard as static files: ``index.html`` (every latent in one sortable, filterable table, its data
inlined, no request made), ``latents/N.html`` (one page per latent, as SAEDashboard does, so 16k latents never
load at once) and ``style.css``. Every text from the corpus is HTML-escaped; no script or style comes from the
network."""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field

import numpy as np

CSS = """body{font:14px system-ui,sans-serif;margin:1.5em;max-width:1100px;color:#222}
table{border-collapse:collapse}td,th{padding:2px 8px;border-bottom:1px solid #ddd;text-align:right}
th{cursor:pointer;background:#f4f4f4}td.l,th.l{text-align:left}.ctx{font-family:monospace;line-height:1.9}
.t{padding:1px 0;border-radius:2px}
.stim{display:inline-block;margin:4px;font-size:12px}.thumb{position:relative;width:128px;height:128px}
.thumb svg{position:absolute;left:0;top:0;width:128px;height:128px}.v{color:#777;font-size:12px}
h2{margin-top:1.4em}a{color:#0a58ca}"""

INDEX_JS = """const D=JSON.parse(document.getElementById('data').textContent);
const P=new URLSearchParams(location.search);const cols=D.columns;let rows=D.rows;
let key=Math.max(0,cols.indexOf(P.get('sort')||'frequency')),desc=P.get('order')!=='asc';
const body=document.getElementById('rows');if(P.get('q'))document.getElementById('q').value=P.get('q');
function draw(){const q=document.getElementById('q').value.trim().toLowerCase();
let r=rows.filter(x=>!q||String(x[0])===q||(x[6]||'').toLowerCase().includes(q));
r.sort((a,b)=>(a[key]<b[key]?-1:a[key]>b[key]?1:0)*(desc?-1:1));
document.getElementById('count').textContent=r.length+' of '+rows.length+' latents';
body.replaceChildren(...r.slice(0,1000).map(x=>{const tr=document.createElement('tr');
x.forEach((v,i)=>{const td=document.createElement('td');if(i===0){const a=document.createElement('a');
a.href='latents/'+v+'.html';a.textContent=v;td.appendChild(a)}else{td.textContent=typeof v==='number'?
(Number.isInteger(v)?v:v.toPrecision(4)):(v||'')}if(i>=5)td.className='l';tr.appendChild(td)});return tr}))}
document.querySelectorAll('th').forEach((th,i)=>th.onclick=()=>{desc=key===i?!desc:true;key=i;draw()});
document.getElementById('q').oninput=draw;draw();"""


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
    hist: list[int]
    top: list[Context] = field(default_factory=list)
    quantiles: list[Context] = field(default_factory=list)
    nearest: list[tuple[int, float]] = field(default_factory=list)
    promoted: list[tuple[str, float]] = field(default_factory=list)
    suppressed: list[tuple[str, float]] = field(default_factory=list)
    explanation: str = ""
    stimuli: list[Stimulus] = field(default_factory=list)
    stimulus_quantiles: list[Stimulus] = field(default_factory=list)


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def bars_svg(values, labels: tuple[str, str], width: int = 420, height: int = 90) -> str:
    """A bar chart as inline SVG (no library, no request)."""
    v = np.asarray(values, dtype=float)
    top = float(v.max()) if len(v) and v.max() > 0 else 1.0
    w = width / max(len(v), 1)
    bars = "".join(f'<rect x="{i * w:.1f}" y="{height - h:.1f}" width="{max(w - 1, 1):.1f}" height="{h:.1f}" '
                   f'fill="#4a7bd0"><title>{int(c)}</title></rect>'
                   for i, c in enumerate(v) for h in [height * c / top])
    return (f'<svg class="hist" width="{width}" height="{height + 16}" role="img">{bars}<text x="0" '
            f'y="{height + 13}" font-size="11">{_e(labels[0])}</text><text x="{width}" y="{height + 13}" '
            f'font-size="11" text-anchor="end">{_e(labels[1])}</text></svg>')


def _context_html(c: Context, max_act: float) -> str:
    spans = []
    for i, (tok, val) in enumerate(zip(c.tokens, c.values, strict=True)):
        alpha = 0.0 if max_act <= 0 else min(max(val / max_act, 0.0), 1.0)
        style = f"background:rgba(255,110,0,{alpha:.3f})" + (";outline:1px solid #333" if i == c.own else "")
        spans.append(f'<span class="t" style="{style}" title="{val:.4g}" data-act="{val:.6g}">{_e(tok)}</span>')
    return (f'<tr><td class="l v">{_e(c.label)}</td><td>{c.activation:.4g}</td>'
            f'<td class="l ctx">{"".join(spans)}</td></tr>')


def _heat_svg(grid: list[list[float]], max_act: float) -> str:
    """The latent's activation per patch, laid over the thumbnail (a cell per patch, opacity by activation)."""
    g = np.asarray(grid, dtype=float)
    cells = "".join(f'<rect x="{c}" y="{r}" width="1" height="1" fill="rgb(255,80,0)" fill-opacity="'
                    f'{0 if max_act <= 0 else min(max(v / max_act, 0), 1) * 0.75:.3f}"><title>{v:.4g}</title></rect>'
                    for (r, c), v in np.ndenumerate(g))
    return (f'<svg class="heat" viewBox="0 0 {g.shape[1]} {g.shape[0]}" preserveAspectRatio="none" '
            f'data-rows="{g.shape[0]}" data-cols="{g.shape[1]}">{cells}</svg>')


def _stimulus_html(s: Stimulus, max_act: float) -> str:
    heat = _heat_svg(s.grid, max_act) if s.grid is not None else ""
    return (f'<figure class="stim" data-stimulus="{_e(s.stimulus_id)}" data-act="{s.activation:.6g}">'
            f'<div class="thumb"><img src="../thumbs/{s.example}.jpg" alt="{_e(s.stimulus_id)}" width="128" '
            f'height="128">{heat}</div><figcaption>{_e(s.stimulus_id)} <span class="v">{_e(s.label)} · '
            f'{s.activation:.4g}</span></figcaption></figure>')


def _examples(p: LatentPage) -> str:
    """The top examples and the quantile samples: token contexts, or stimulus thumbnails."""
    if p.stimuli or p.stimulus_quantiles:
        stim = lambda rows: "".join(_stimulus_html(s, p.max_act) for s in rows)  # noqa: E731
        return (f"<h2>Top stimuli</h2><div id='top' class='stims'>{stim(p.stimuli)}</div>"
                f"<h2>Samples by activation quantile</h2><div id='quantiles' class='stims'>"
                f"{stim(p.stimulus_quantiles)}</div>")
    ctx = lambda rows: "".join(_context_html(c, p.max_act) for c in rows)  # noqa: E731
    return (f"<h2>Top activations</h2><table id='top'>{ctx(p.top)}</table>"
            f"<h2>Samples by activation quantile</h2><table id='quantiles'>{ctx(p.quantiles)}</table>")


def latent_html(p: LatentPage, edges_label: tuple[str, str]) -> str:
    """One latent's page."""
    near = "".join(f'<li><a href="{n}.html">latent {n}</a> <span class="v">cos {c:.3f}</span></li>'
                   for n, c in p.nearest)
    logit_rows = "".join(f"<tr><td class='l'>{_e(a)}</td><td>{x:+.3f}</td><td class='l'>{_e(b)}</td><td>{y:+.3f}"
                         "</td></tr>" for (a, x), (b, y) in zip(p.promoted, p.suppressed, strict=True))
    logits = (f"<h2>Logit effects</h2><table id='logits'><tr><th class='l'>promoted</th><th></th>"
              f"<th class='l'>suppressed</th><th></th></tr>{logit_rows}</table>" if p.promoted else "")
    expl = f"<p id='explanation'><b>Explanation:</b> {_e(p.explanation)}</p>" if p.explanation else ""
    return (f"<!doctype html><meta charset='utf-8'><title>latent {p.latent}</title>"
            f"<link rel='stylesheet' href='../style.css'><p><a href='../index.html'>all latents</a></p>"
            f"<h1>Latent {p.latent}</h1>{expl}<p>firing frequency <b>{p.frequency:.4g}</b> · max activation "
            f"<b>{p.max_act:.4g}</b> · mean when active <b>{p.mean_act:.4g}</b></p>"
            f"<h2>Activation histogram</h2>{bars_svg(p.hist, edges_label)}"
            f"{_examples(p)}{logits}<h2>Nearest latents (decoder cosine)</h2><ul id='nearest'>{near}</ul>")


def index_html(title: str, columns: list[str], rows: list[list], density_svg: str, notes: str) -> str:
    """The index: every latent's row inlined as JSON (escaped for a script element), drawn by a small script."""
    data = json.dumps({"columns": columns, "rows": rows}, separators=(",", ":"))
    data = data.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")  # cannot close the script
    heads = "".join(f"<th{' class=l' if i >= 5 else ''}>{_e(c)}</th>" for i, c in enumerate(columns))
    return (f"<!doctype html><meta charset='utf-8'><title>{_e(title)}</title><link rel='stylesheet' "
            f"href='style.css'><h1>{_e(title)}</h1><p class='v'>{_e(notes)}</p>"
            f"<h2>Firing density over latents</h2>{density_svg}"
            f"<p><input id='q' placeholder='latent id or token' size='30'> <span id='count'></span></p>"
            f"<table id='latents'><thead><tr>{heads}</tr></thead><tbody id='rows'></tbody></table>"
            f"<script id='data' type='application/json'>{data}</script><script>{INDEX_JS}</script>")
