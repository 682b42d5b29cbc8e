"""``report.html``: one self-contained page per analysis run (its settings and provenance, plots inlined as
PNG data, tables sortable, a link per hook that filters every table to the rows naming it). Pure rendering:
``report_files`` gathers what a run wrote. Every text is HTML-escaped; nothing is fetched from the network."""

from __future__ import annotations

import base64
import html
import json
import math
from dataclasses import dataclass, field
from urllib.parse import quote

#: columns whose values name hooks: their cells link to the hook's filter
HOOK_COLUMNS = frozenset({"hook", "hook_a", "hook_b", "layer", "source_hook", "target_hook"})
#: the first column of a summary section's table (``report_files``): a hook's name there is filtered like a hook's
NAME_COLUMN = "name"
HALF_CELL = 560  #: pixels of a figure two to a row (``CSS``)

CSS = """body{font:14px system-ui,sans-serif;margin:1.5em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:.4em 0}td,th{padding:2px 8px;border-bottom:1px solid #ddd;text-align:right}
th{cursor:pointer;background:#f4f4f4;position:sticky;top:0}td.s,th.s{text-align:left}.v{color:#777;font-size:12px}
nav a{margin-right:.6em}nav a.on{font-weight:bold;text-decoration:none;color:#222}figure{display:inline-block;
margin:.5em}figure img{max-width:560px;border:1px solid #eee}figure.wide{display:block}figure.wide img{max-width:100%}
h2{margin-top:1.4em}.wrap{max-height:32em;overflow:auto}
dl{display:grid;grid-template-columns:max-content auto;gap:1px 1em}dt{color:#555}dd{margin:0;font-family:monospace}"""

JS = """const P=new URLSearchParams(location.search);
function cell(td){const v=td.dataset.v;return v===undefined?td.textContent:Number(v)}
function sortTable(t,i,asc){const b=t.tBodies[0];const r=[...b.rows];
r.sort((x,y)=>{const a=cell(x.cells[i]),c=cell(y.cells[i]);return(a<c?-1:a>c?1:0)*(asc?1:-1)});
b.replaceChildren(...r);t.dataset.sorted=t.tHead.rows[0].cells[i].textContent+(asc?':asc':':desc')}
document.querySelectorAll('table.data').forEach(t=>{[...t.tHead.rows[0].cells].forEach((th,i)=>{
th.onclick=()=>sortTable(t,i,t.dataset.sorted!==th.textContent+':asc')});
const want=P.get('sort');if(want){const i=[...t.tHead.rows[0].cells].findIndex(c=>c.textContent===want);
if(i>=0)sortTable(t,i,P.get('order')==='asc')}});
function filter(){const h=decodeURIComponent((location.hash.match(/hook=([^&]*)/)||[])[1]||'');
document.querySelectorAll('nav a').forEach(a=>a.classList.toggle('on',a.dataset.hook===h));
document.querySelectorAll('table.data').forEach(t=>{if(!t.querySelector('[data-hook]'))return;let n=0;
[...t.tBodies[0].rows].forEach(r=>{const ok=!h||[...r.querySelectorAll('[data-hook]')].some(c=>c.dataset.hook===h);
r.hidden=!ok;n+=ok});const c=t.parentNode.previousElementSibling.querySelector('.shown');if(c)c.textContent=n});
document.querySelectorAll('figure[data-hook],details[data-hook]').forEach(f=>f.hidden=!!h&&f.dataset.hook!==h)}
window.onhashchange=filter;filter();"""


@dataclass
class ReportTable:
    """A table as the page shows it: ``rows`` are the first of ``total`` (the file holds them all)."""

    name: str
    columns: list[str]
    rows: list[list]
    total: int


@dataclass
class ReportFigure:
    name: str
    png: bytes


@dataclass
class RunReport:
    """What one run's page shows."""

    command: str
    where: str
    run: dict  #: run.json (secrets already removed)
    summary: dict
    tables: list[ReportTable] = field(default_factory=list)
    figures: list[ReportFigure] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    hooks: list[str] = field(default_factory=list)


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _value(v) -> str:
    """One table cell: numbers carry their exact value for sorting and show 4 significant digits."""
    if isinstance(v, bool) or v is None:
        return f"<td class='s'>{'' if v is None else _e(v)}</td>"
    if isinstance(v, int | float):
        if isinstance(v, float) and not math.isfinite(v):
            return f"<td data-v='{-1e308 if v != v else v}'>{_e(v)}</td>"
        shown = str(v) if isinstance(v, int) else f"{v:.4g}"
        return f"<td data-v='{v!r}'>{shown}</td>"
    text = v if isinstance(v, str) else json.dumps(v, default=str)
    return f"<td class='s'>{_e(text[:200])}</td>"


def _row(columns: list[str], row: list, hooks: frozenset[str] = frozenset()) -> str:
    cells = []
    for c, v in zip(columns, row, strict=True):
        if isinstance(v, str) and (c in HOOK_COLUMNS or (c == NAME_COLUMN and v in hooks)):
            cells.append(f"<td class='s' data-hook='{_e(v)}'><a href='#hook={_e(v)}'>{_e(v)}</a></td>")
        else:
            cells.append(_value(v))
    return "<tr>" + "".join(cells) + "</tr>"


def table_html(t: ReportTable, hooks: list[str] | tuple[str, ...] = ()) -> str:
    """A sortable table; cells naming a hook (a hook column's, or a ``name`` among ``hooks``) follow its filter."""
    heads = "".join(f"<th>{_e(c)}</th>" for c in t.columns)
    body = "".join(_row(t.columns, r, frozenset(hooks)) for r in t.rows)
    more = f" (the first {len(t.rows)} of {t.total}: the file holds all)" if t.total > len(t.rows) else ""
    return (f"<h3 id='t-{_e(t.name)}'>{_e(t.name)} <span class='v'><span class='shown'>{len(t.rows)}</span> rows "
            f"shown{more}</span></h3><div class='wrap'><table class='data' data-name='{_e(t.name)}'>"
            f"<thead><tr>{heads}</tr></thead><tbody>{body}</tbody></table></div>")


def _shown(v) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, list) and len(v) > 20:
        v = [*v[:20], f"… {len(v)} in all"]
    return json.dumps(v, default=str, ensure_ascii=False)


def _dl(d: dict, dl_id: str = "", hooks: frozenset[str] = frozenset()) -> str:
    """Settings or a summary as a definition list: scalars first, each nested section folded (a section named by
    a hook follows the hook filter)."""
    d = d or {}
    flat = "".join(f"<dt>{_e(k)}</dt><dd>{_e(_shown(v))}</dd>" for k, v in d.items()
                   if not (isinstance(v, dict) and v))
    nested = "".join(f"<details{f' data-hook={_e(k)!r}' if k in hooks else ''}><summary>{_e(k)}</summary>"
                     f"{_dl(v, hooks=hooks)}</details>" for k, v in d.items() if isinstance(v, dict) and v)
    return f"<dl{f' id={dl_id!r}' if dl_id else ''}>{flat}</dl>{nested}"


def png_size(png: bytes) -> tuple[int, int]:
    """(width, height) in pixels from a PNG's header; (0, 0) for anything else."""
    if png[:8] != b"\x89PNG\r\n\x1a\n" or len(png) < 24:
        return 0, 0
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


def is_wide(png: bytes) -> bool:
    """Whether a figure gets a row of its own: twice as wide as tall (a strip of panels), or so wide that a
    half-width cell would shrink it by more than a third (a grid of panels, a big heat map); its text would be
    illegible at half width."""
    w, h = png_size(png)
    return w >= 2 * h > 0 or w > 1.5 * HALF_CELL


def _figure(f: ReportFigure, hooks: list[str]) -> str:
    parts = set(f.name.replace(".png", "").split("/"))
    hook = next((h for h in hooks if h in parts), "")
    return (f"<figure{' class=wide' if is_wide(f.png) else ''}{f' data-hook={_e(hook)!r}' if hook else ''}>"
            f"<img alt='{_e(f.name)}' "
            f"src='data:image/png;base64,{base64.b64encode(f.png).decode()}'>"
            f"<figcaption class='v'>{_e(f.name)}</figcaption></figure>")


def report_html(r: RunReport) -> str:
    """The page (one string: styles, script, images and tables inlined)."""
    ds = r.run.get("dataset") or {}
    prov = (f"<p id='provenance'>dataset <b>{_e(ds.get('dataset_id', '?'))}</b> version "
            f"<b>{_e(ds.get('version', '?'))}</b> at {_e(ds.get('uri', '?'))}</p>" if ds else "")
    nav = ("<nav id='hooks'>hooks: <a href='#' data-hook=''>all</a>"
           + "".join(f"<a href='#hook={_e(h)}' data-hook='{_e(h)}'>{_e(h)}</a>" for h in r.hooks) + "</nav>"
           if r.hooks else "")
    figs = "".join(_figure(f, r.hooks) for f in r.figures)
    # a relative link per path segment URL-quoted: a file under a folder named "javascript:..." or "a#b" is that
    # file, not a script or a fragment
    files = "".join(f"<li><a href='./{_e(quote(f))}'>{_e(f)}</a></li>" for f in r.files)
    settings = {k: v for k, v in (r.run.get("config") or {}).items() if k not in ("storage",)}
    tables = "".join(table_html(t, r.hooks) for t in r.tables)
    return (f"<!doctype html><meta charset='utf-8'><title>actlake {_e(r.command)}: {_e(r.where)}</title>"
            f"<style>{CSS}</style><h1>actlake {_e(r.command)}</h1><p class='v'>{_e(r.where)} · fingerprint "
            f"{_e(r.run.get('fingerprint', ''))}</p>{prov}{nav}"
            f"<h2>Plots</h2>{figs or '<p>none</p>'}<h2>Tables</h2>{tables}"
            f"<h2>Summary</h2>{_dl(r.summary, 'summary', frozenset(r.hooks))}"
            f"<h2>Settings</h2>{_dl(settings, 'settings')}"
            f"<h2>Provenance</h2>{_dl({'dataset': ds, 'seeds': r.run.get('seeds'), 'libraries': r.run.get('libraries')}, 'prov')}"  # noqa: E501
            f"<details><summary>{len(r.files)} files</summary><ul id='files'>{files}</ul></details>"
            f"<script>{JS}</script>")
