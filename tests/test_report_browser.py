"""The report page opened in a real headless browser (Debian's Chromium): the charts decode,
the tables hold the synthetic log's exact numbers, the malformed lines are reported, and the
page loads nothing from outside."""

from __future__ import annotations

import base64
import json
import struct
from html.parser import HTMLParser
from pathlib import Path

import pytest

from hydraguard.report import write_report

from . import browser_util
from .report_util import SECRET_KEY, write_log

PLOTS = ["actions-over-time", "refusals-by-rule", "refused-geo", "top-clusters",
         "budget-utilisation", "signals"]


class Dom(HTMLParser):
    """What the tests read from a serialised DOM: images, tables (rows of cell texts),
    summary values by data-key, texts by element id, and attributes of <html>."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.images: list[dict[str, str]] = []
        self.tables: dict[str, list[list[str]]] = {}
        self.keys: dict[str, str] = {}
        self.by_id: dict[str, str] = {}
        self.root: dict[str, str] = {}
        self._table: str | None = None
        self._cell: list[str] | None = None
        self._key: str | None = None
        self._ids: list[tuple[str, str, list[str]]] = []  # (tag, id, texts) open elements
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "html":
            self.root = a
        if tag == "img":
            self.images.append(a)
        if tag == "table":
            self._table = a.get("id", "")
            self.tables[self._table] = []
        if tag == "tr" and self._table is not None:
            self.tables[self._table].append([])
        if tag in ("td", "th"):
            self._cell = []
            self._key = a.get("data-key")
        if "id" in a and tag not in ("table", "img"):
            self._ids.append((tag, a["id"], []))

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            text = "".join(self._cell).strip()
            if self._table is not None and self.tables[self._table]:
                self.tables[self._table][-1].append(text)
            if self._key:
                self.keys[self._key] = text
            self._cell = self._key = None
        if tag == "table":
            self._table = None
        if self._ids and self._ids[-1][0] == tag:
            _, ident, texts = self._ids.pop()
            self.by_id[ident] = "".join(texts).strip()

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        for _, _, texts in self._ids:
            texts.append(data)


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    browser_util.chromium()  # skip (or fail in CI) before building anything
    d = tmp_path_factory.mktemp("report")
    log = write_log(d / "decisions.jsonl")
    out = d / "report.html"
    write_report([str(log)], str(out))
    return out


def png_size(data_uri: str) -> tuple[int, int]:
    raw = base64.b64decode(data_uri.split(",", 1)[1])
    assert raw[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", raw[16:24])


def test_dom_holds_the_charts_and_exact_numbers(page: Path) -> None:
    dom = Dom(browser_util.dump_dom(page))
    plots = [(i["data-plot"], i["src"][:22]) for i in dom.images]
    assert plots == [(p, "data:image/png;base64,") for p in PLOTS]
    assert all(png_size(i["src"])[0] >= 600 for i in dom.images)
    assert dom.keys["records"] == "17" and dom.keys["refused"] == "5"
    assert dom.keys["shadow"] == "2" and dom.keys["tokens"] == "1,800"
    assert (dom.keys["accounts"], dom.keys["client-ips"], dom.keys["clusters"]) == ("6", "3", "3")
    assert dom.keys["malformed"] == "5"
    assert (dom.keys["first"], dom.keys["last"]) == ("2026-03-01 12:00:00Z",
                                                     "2026-03-01 12:09:59Z")
    assert dom.by_id["malformed"].startswith("5 malformed lines")
    assert dom.by_id["malformed"].endswith(
        ", ".join(f"{page.parent / 'decisions.jsonl'}:{n}" for n in (3, 4, 5, 6, 7)))
    assert dom.tables["tbl-refusals"][1:] == [
        ["denied-countries", "3", "60.0 %", "0"], ["cluster-tokens", "2", "40.0 %", "0"],
        ["new-rule", "0", "0.0 %", "2"], ["watch", "0", "0.0 %", "1"]]
    assert dom.tables["tbl-refused-countries"][1:] == [["CN", "3"], ["NL", "2"]]
    assert dom.tables["tbl-refused-subdivisions"][1:] == [["CN-BJ", "2"], ["CN-SH", "1"]]
    assert dom.tables["tbl-largest-clusters"][1:] == [
        ["c:big", "1,500", "12", "2", "4", "3", "2026-03-01 12:00:00Z", "2026-03-01 12:09:00Z"],
        ["c:solo", "300", "2", "0", "1", "1", "2026-03-01 12:05:00Z", "2026-03-01 12:09:59Z"],
        ["c:cn", "0", "3", "3", "1", "1", "2026-03-01 12:03:20Z", "2026-03-01 12:03:22Z"]]
    assert dom.tables["tbl-budgets"][1:] == [
        ["cluster-tokens", "minute", "1,000", "12", "2", "0", "0", "62.4 %", "≤ 65 %",
         "≤ 100 %", "100.0 %"],
        ["watch", "—", "—", "0", "0", "1", "0", "—", "—", "—", "—"]]
    assert dom.tables["tbl-signals"][1:] == [
        ["template.id", "10", "58.8 %"], ["template.accounts", "7", "41.2 %"],
        ["ip.residential_proxy", "3", "17.6 %"]]
    assert dom.by_id["exact"] == "every count on this page is exact"


def test_charts_decode_in_the_browser(page: Path, tmp_path: Path) -> None:
    """A copy of the page with a probe script (the report itself has none, and its CSP forbids
    scripts): after load, every chart is decoded at its PNG size."""
    text = page.read_text()
    assert "<script" not in text and "Content-Security-Policy" in text
    assert "http://" not in text and "https://" not in text and SECRET_KEY not in text
    probe = ("<script>addEventListener('load',()=>document.documentElement.setAttribute("
             "'data-decoded',JSON.stringify([...document.images].map(i=>[i.dataset.plot,"
             "i.complete,i.naturalWidth,i.naturalHeight]))))</script>")
    copy = tmp_path / "probe.html"
    copy.write_text(text.replace("default-src 'none';", "default-src 'none'; script-src "
                                 "'unsafe-inline';").replace("</body>", probe + "</body>"))
    dom = Dom(browser_util.dump_dom(copy))
    decoded = json.loads(dom.root["data-decoded"])
    expected = [[i["data-plot"], True, *png_size(i["src"])] for i in dom.images]
    assert decoded == expected and len(decoded) == len(PLOTS)


def test_screenshot_shows_the_charts(page: Path, tmp_path: Path) -> None:
    from PIL import Image

    shot = browser_util.screenshot(page, tmp_path / "shot.png", (1200, 3000))
    with Image.open(shot) as im:
        assert im.size == (1200, 3000)
        rgb = im.convert("RGB")
        colours = rgb.getcolors(maxcolors=1 << 20)
    assert colours is not None
    def near(c: tuple[int, int, int], ref: str) -> bool:
        r, g, b = (int(ref[i:i + 2], 16) for i in (1, 3, 5))
        return abs(c[0] - r) + abs(c[1] - g) + abs(c[2] - b) < 30
    deny = sum(n for n, c in colours if near(c, "#c0392b"))  # refusal bars
    allow = sum(n for n, c in colours if near(c, "#4c9a6a"))  # allowed decisions over time
    white = sum(n for n, c in colours if c == (255, 255, 255))
    assert deny > 500 and allow > 500 and white < 0.97 * 1200 * 3000
