"""Tests for the HTML report: one self-contained page with every figure and table."""

from __future__ import annotations

import base64
import html
import re
from html.parser import HTMLParser

from simlab.analysis.analyses import load_result
from simlab.cli.main import main

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs, self.images, self.pre = [], [], 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for key in ("src", "href"):
            if key in attrs:
                self.refs.append(attrs[key])
        if tag == "img":
            self.images.append(attrs["src"])
        if tag in ("link", "script"):
            self.refs.append(f"<{tag}>")
        self.pre += tag == "pre"


def test_report_is_self_contained_with_every_figure_and_table(analyzed_run, capsys):
    assert main(["report", str(analyzed_run)]) == 0
    page = (analyzed_run / "report.html").read_text()
    parser = _Collect()
    parser.feed(page)
    figures = sorted((analyzed_run / "figures").glob("*.png"))
    assert len(parser.images) == len(figures) >= 6
    for png in figures:  # the vector files beside each PNG, named under it
        assert png.with_suffix(".pdf").read_bytes().startswith(b"%PDF-")
        assert png.with_suffix(".svg").is_file()
        assert f"{png.stem}.svg and {png.stem}.pdf in figures/" in page
    for src in parser.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(PNG_SIGNATURE)
    # nothing is loaded from elsewhere: only in-page anchors and embedded images
    assert all(r.startswith(("#", "data:")) for r in parser.refs), parser.refs
    analyses = sorted((analyzed_run / "analyses").glob("*.nc"))
    assert parser.pre >= len(analyses)  # every analysis's table (plus the protocol)
    for path in analyses:
        title = str(load_result(path).attrs["title"])
        assert title[1:] in page
        assert html.escape(path.with_suffix(".txt").read_text().splitlines()[0]) in page
    assert re.search(r"<table>.*mean final accuracy", page, re.S)
    assert "Design plan" in page and "fewest units" in page  # the planner's answer on the grid
