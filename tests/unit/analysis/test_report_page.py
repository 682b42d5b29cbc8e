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
