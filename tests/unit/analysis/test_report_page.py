"""``report.html`` escapes every text it shows (labels, hook names and settings come from users' data)."""

from __future__ import annotations

from html.parser import HTMLParser

from analysis.common.report_page import ReportFigure, ReportTable, RunReport, report_html

EVIL = "<script>alert('x')</script> & \"quoted\""


class _Elements(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str | None]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs += attrs


def test_text_from_data_is_escaped_everywhere():
    page = report_html(RunReport(
        command="probe", where="/runs/<x>", run={"dataset": {"dataset_id": EVIL, "version": 3, "uri": EVIL},
                                                "config": {"label": EVIL}},
        summary={"note": EVIL, "per": {EVIL: {"score": 1.0}}},
        tables=[ReportTable("t.parquet", ["hook", "label", "score"],
                            [[EVIL, EVIL, 0.5], ["h'1", "a", float("nan")]], 2)],
        figures=[ReportFigure(f"{EVIL}.png", b"\x89PNG")], files=[EVIL], hooks=[EVIL, "h'1"]))
    p = _Elements()
    p.feed(page)
    assert p.tags.count("script") == 1  # the page's own, none from the data
    assert not any(name.startswith("on") for name, _ in p.attrs)  # no event handler attribute came in
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; &quot;quoted&quot;" in page
    assert "data-hook='h&#x27;1'" in page and "data-v='nan'" not in page


def _png(width_in: float, height_in: float) -> bytes:
    from analysis.common.plots import figure_png, pyplot

    fig = pyplot().figure(figsize=(width_in, height_in))
    fig.add_subplot().plot([0, 1], [0, 1])
    return figure_png(fig)


def _laid_out(chromium: str, page: str, tmp_path, fragment: str = "") -> tuple[str, dict]:
    """(the DOM after the page's scripts ran in a 1280-px-wide window, each image's {alt: [width, top]} as laid
    out once every image loaded)."""
    import html
    import json
    import re
    import subprocess

    probe = ("<script>addEventListener('load',()=>{document.body.dataset.boxes=JSON.stringify(Object.fromEntries("
             "[...document.querySelectorAll('figure img')].map(i=>{const r=i.getBoundingClientRect();"
             "return [i.alt,[Math.round(r.width),Math.round(r.top)]]})))})</script>")
    (tmp_path / "shown.html").write_text(page + probe)
    dom = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1280,2000",
                          "--dump-dom", f"file://{tmp_path}/shown.html{fragment}"], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    boxes = re.search(r'data-boxes="([^"]*)"', dom)
    return dom, json.loads(html.unescape(boxes.group(1))) if boxes else {}


def test_wide_figures_take_a_full_width_cell(tmp_path, chromium):
    """A figure twice as wide as tall, or one a half-width cell would shrink by more than a third, gets the whole
    row (it was squeezed to 560 px: the stats report's clusters plot illegible); small ones stay two a row."""
    figs = [ReportFigure("norms.png", _png(10, 3.6)), ReportFigure("a.png", _png(6, 3.6)),
            ReportFigure("b.png", _png(6, 3.6)), ReportFigure("grid.png", _png(12, 6.8))]
    _, boxes = _laid_out(chromium, report_html(RunReport("stats", "/r", {}, {}, figures=figs)), tmp_path)
    assert boxes["norms.png"][0] >= 1000 and boxes["grid.png"][0] >= 1000  # 1100 and 1320 px drawn, 1200 max
    assert boxes["a.png"][0] == boxes["b.png"][0] <= 562 and boxes["a.png"][1] == boxes["b.png"][1]  # one row
    assert boxes["grid.png"][1] > boxes["a.png"][1] > boxes["norms.png"][1]  # each wide one on a row of its own


def test_clusters_plot_wraps_its_panels():
    """Seven cluster indices: at most four panels a row (seven in one row made a 21-inch strip)."""
    from analysis.geometry.report import clusters_figure

    keys = ("silhouette", "davies_bouldin", "calinski_harabasz", "dunn", "xie_beni", "aqi", "aqi_tsne")
    rows = [{"hook": f"resid.{i}", **{k: 1.0 + i for k in keys}} for i in range(5)]
    fig = clusters_figure(rows, "label")
    drawn = [ax for ax in fig.axes if ax.get_visible() and ax.lines]
    assert sorted(ax.get_title() for ax in drawn) == sorted(keys)
    assert len({round(ax.get_position().x0, 3) for ax in drawn}) == 4
    assert len({round(ax.get_position().y0, 3) for ax in drawn}) == 2
    w, h = fig.get_size_inches()
    assert w <= 12.5 and w / h < 2


def test_the_hook_filter_applies_to_the_summary_too(tmp_path, chromium):
    """``#hook=resid.1`` hides the summary's rows and sections of other hooks, as it hides other tables' rows
    (the summary table stayed whole)."""
    import json
    import re

    from analysis.common.report_files import write_report
    from shards.storage import Storage

    hooks = ["resid.0", "resid.1", "resid.2"]
    (tmp_path / "run.json").write_text(json.dumps({"dataset": {"dataset_id": "d", "version": 1, "uri": "/d",
                                                               "hooks": hooks}}))
    summary = {"label": "y", "hooks": {h: {"score": 0.5 + i / 10, "n": 10} for i, h in enumerate(hooks)}}
    assert write_report(Storage(str(tmp_path)), "probe", summary, [])
    page = (tmp_path / "report.html").read_text()
    dom, _ = _laid_out(chromium, page, tmp_path)  # unfiltered first

    def shown(dom: str) -> tuple[list[str], list[str]]:
        body = re.search(r"data-name=\"summary: hooks\".*?<tbody>(.*?)</tbody>", dom, re.S).group(1)
        rows = [r for r in re.findall(r"<tr[^>]*>.*?</tr>", body, re.S) if "hidden" not in r.split(">", 1)[0]]
        names = [re.search(r">(resid\.\d)<", r).group(1) for r in rows]
        details = [d for d in re.findall(r"<details([^>]*)><summary>(resid\.\d)</summary>", dom)
                   if "hidden" not in d[0]]
        return names, [d[1] for d in details]

    assert shown(dom) == (["resid.0", "resid.1", "resid.2"], ["resid.0", "resid.1", "resid.2"])
    dom, _ = _laid_out(chromium, page, tmp_path, fragment="#hook=resid.1")
    assert shown(dom) == (["resid.1"], ["resid.1"])
    assert "<dt>label</dt><dd>y</dd>" in dom  # what names no hook stays
