"""The HTML report in a real browser: headless Chromium loads it from disk, runs its script with
no console errors, sorts, filters, pages and opens drill-downs, and takes a screenshot.

Skipped only when no Chromium is installed (Debian: ``apt-get install chromium``).
"""

from __future__ import annotations

import base64
import hashlib
import html as htmllib
import json
import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path
from typing import Any

import pytest

from pytest_ragbench.report.html import PAGE_SIZE, write_html
from pytest_ragbench.results.aggregate import summarize_run


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").is_file() else None


CHROMIUM = _chromium()
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium found")

# If any of this were ever parsed as markup, the handler would mark the document.
PWN = "<img src=x onerror=\"document.documentElement.setAttribute('data-pwned','1')\">"
N_QUERIES = 240  # two retrievers: 480 rows, three pages
# Eight metrics (and the latency column) and long queries: a table wider than a 1280 px
# window, so the one report (and one browser start) also shows the sticky id column. Listed
# in sorted order, as the summary lists them: m0 is ndcg@10.
WIDE_METRICS = ("ndcg@10", "precision@10", "precision@5", "r_precision", "recall@10",
                "recall@100", "success@1", "success@5")


def _records() -> list[dict[str, Any]]:
    out = []
    for retriever in ("bm25", "dense " + PWN):
        for i in range(N_QUERIES):
            score = ((i * 37) % 101) / 100
            others = {m: ((i * 13) % 10) / 10 for m in WIDE_METRICS
                      if m not in ("ndcg@10", "recall@10")}
            out.append({
                "schema": 1, "suite": "suites/s.yaml", "suite_name": "smoke",
                "suite_hash": "a" * 64, "dataset_hash": "b" * 64, "retriever": retriever,
                "case_id": f"q{i:04d}", "run": 0,
                "query": f"question number {i}, a rather long one about many things " * 3,
                "type": None, "difficulty": None, "tags": [],
                "status": "failed" if score < 0.1 else "ok", "error": None,
                "metrics": {"ndcg@10": score, "recall@10": 1 - score, **others},
                "latency_ms": 3.0 + i % 7, "n_relevant": 1, "no_relevant": False,
                "retrieved": [[f"d{i}", 2.0, 1], ["d0", 1.0, 0]], "missed": [],
                "thresholds": [],
            })
    out.append({**out[0], "case_id": "hostile-" + PWN, "query": "hostile " + PWN,
                "retrieved": [[PWN, 1.0, 1]], "answer": "answer " + PWN,
                "relevant_ranks": {PWN: 57, "d3": None},
                "judge": {"faithfulness": {"claims": [{"claim": PWN, "supported": 0,
                                                       "why": PWN}]}}})
    return out


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    records = _records()
    summary = summarize_run(records, {})
    summary["run"] = {"id": "browser-test", "partial": False, "n_records": len(records)}
    summary["gates"] = [{"kind": "threshold", "suite": "smoke", "retriever": "bm25",
                         "metric": "ndcg@10", "scope": "", "op": ">=", "threshold": 0.4,
                         "value": 0.5, "passed": True, "margin": 0.1, "text": "ndcg@10 >= 0.4"}]
    summary["gates_passed"] = True
    path = tmp_path_factory.mktemp("report") / "report.html"
    return write_html(path, summary, records, doc_text={"d1": "document one " + PWN})


def _run_chromium(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    profile = tmp / "profile"
    profile.mkdir(exist_ok=True)
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", f"--user-data-dir={profile}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=90, check=False)


def _console(stderr: str) -> list[str]:
    """Console messages (errors, uncaught exceptions, CSP violations) Chromium logged."""
    return [line for line in stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]


# The start of every driver script: the case table and helpers to read its columns. A driver
# ends by writing its findings, as JSON, into <pre id="rb-test-out">.
DRIVER_PRELUDE = """
(() => {
  const out = {};
  const table = document.querySelector("table.rb-table");
  const section = table.closest(".rb-cases");
  const keys = [...table.tHead.rows[0].cells].map((th) => th.getAttribute("data-key"));
  const rows = () => [...table.tBodies[0].querySelectorAll("tr.rb-row")];
  const column = (key) => rows().map((r) => r.cells[keys.indexOf(key)].textContent);
"""

# The page as loaded (its script runs as the page is parsed, before the driver), then the
# sticky id column at a sideways scroll, then sorting, filtering, paging and a drill-down.
DRIVER = DRIVER_PRELUDE + """
  out.initial = document.documentElement.outerHTML;
  const box = table.closest(".rb-scroll");
  const first = rows()[0];
  const at = (el) => el.getBoundingClientRect().left - box.getBoundingClientRect().left;
  out.viewport = window.innerWidth;
  out.clientWidth = box.clientWidth;
  out.scrollWidth = box.scrollWidth;
  out.pageScrollWidth = document.documentElement.scrollWidth;
  const idCell = first.cells[keys.indexOf("id")];
  const metricCell = first.cells[keys.indexOf("m7")];
  const head = table.tHead.rows[0].cells[0];
  out.before = [at(idCell), at(metricCell), at(head)];
  box.scrollLeft = 200;
  out.scrolled = box.scrollLeft;
  out.after = [at(idCell), at(metricCell), at(head)];
  out.idPosition = getComputedStyle(idCell).position;
  // What is painted at the id cell's place is the id cell, not a metric sliding under it.
  window.scrollTo(0, window.scrollY + idCell.getBoundingClientRect().top - 200);
  const r = idCell.getBoundingClientRect();
  const hit = document.elementFromPoint(r.left + 5, r.top + r.height / 2);
  out.onTop = hit === idCell || idCell.contains(hit);
  out.hit = hit ? hit.tagName + "." + hit.className : null;
  const fire = (el, value, type) => { el.value = value; el.dispatchEvent(new Event(type)); };
  const sort = table.querySelector('th[data-key="m0"] button');
  sort.click();
  out.asc = column("m0");
  out.ariaSort = sort.parentElement.getAttribute("aria-sort");
  sort.click();
  out.desc = column("m0");
  const text = section.querySelector(".rb-text");
  fire(text, "q0007", "input");
  out.filtered = column("id");
  out.count = section.querySelector(".rb-count").textContent;
  fire(text, "", "input");
  const status = section.querySelector(".rb-status");
  fire(status, "failed", "change");
  out.failed = column("status");
  fire(status, "", "change");
  fire(section.querySelector(".rb-ret"), "0", "change");
  out.retrievers = [...new Set(column("retriever"))];
  fire(section.querySelector(".rb-ret"), "", "change");
  section.querySelector(".rb-next").click();
  out.page = table.getAttribute("data-page");
  out.pageInfo = section.querySelector(".rb-pageinfo").textContent;
  section.querySelector(".rb-last").click();
  out.lastRows = rows().length;
  fire(text, "hostile", "input");
  out.query = column("query");
  const details = table.querySelector("tr.rb-drill details");
  details.open = true;
  setTimeout(() => {
    const body = details.querySelector(".rb-drill-body");
    out.drill = body ? body.textContent : null;
    out.drillImages = body ? body.querySelectorAll("img").length : -1;
    const pre = document.createElement("pre");
    pre.id = "rb-test-out";
    pre.textContent = JSON.stringify(out);
    document.body.append(pre);
    // Back to the top of the unfiltered table for the screenshot taken after the driver.
    details.open = false;
    fire(text, "", "input");
    box.scrollLeft = 0;
    window.scrollTo(0, 0);
  }, 50);
})();
"""


def _with_driver(report: Path, dest: Path, driver: str = DRIVER) -> Path:
    """The report plus a driver script, allowed by its hash like the report's own."""
    page = report.read_text(encoding="utf-8")
    digest = base64.b64encode(hashlib.sha256(driver.encode()).digest()).decode()
    assert page.count("script-src ") == 1
    page = page.replace("script-src ", f"script-src &#39;sha256-{digest}&#39; ", 1)
    page = page.replace("</body>", f"<script>{driver}</script></body>", 1)
    dest.write_text(page, encoding="utf-8")
    return dest


def _drive(report: Path, tmp_path: Path, driver: str = DRIVER,
           screenshot: Path | None = None) -> tuple[dict[str, Any], str]:
    """Open the report with ``driver`` in headless Chromium (a 1280 x 2000 window): what the
    driver wrote, and the final DOM; and a screenshot of the page after the driver, if asked."""
    page = _with_driver(report, tmp_path / "driven.html", driver)
    shot = [f"--screenshot={screenshot}", "--hide-scrollbars"] if screenshot else []
    proc = _run_chromium(tmp_path, "--enable-logging=stderr", "--v=0", "--window-size=1280,2000",
                         *shot, "--virtual-time-budget=5000", "--dump-dom", page.as_uri())
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert _console(proc.stderr) == []
    m = re.search(r'<pre id="rb-test-out">(.*?)</pre>', proc.stdout, re.S)
    assert m is not None, proc.stdout[-2000:]
    return json.loads(htmllib.unescape(m.group(1))), proc.stdout


def _numbers(cells: list[str]) -> list[float]:
    return [float(c) for c in cells if c != "nan"]


def test_script_renders_sorts_filters_pages_and_drills_down(report: Path,
                                                           tmp_path: Path) -> None:
    shot = tmp_path / "report.png"
    out, dom = _drive(report, tmp_path, screenshot=shot)  # no console errors, as it checks
    # As loaded: the script has run and rendered the table's first page.
    initial = out["initial"]
    assert 'data-rb-ready="1"' in initial
    table = re.search(r'<table class="rb-table"[^>]*>', initial)
    assert table is not None
    assert 'data-ready="1"' in table.group(0)
    assert f'data-rows="{2 * N_QUERIES + 1}"' in table.group(0)
    assert len(re.findall(r'<tr class="rb-row', initial)) == PAGE_SIZE
    assert "page 1 of 3 (rows 1\u2013200 of 481)" in htmllib.unescape(initial)
    # The controls appear and the no-script note goes once the script has run.
    assert 'class="rb-controls" hidden' not in initial
    assert 'class="rb-static-note"' not in initial
    assert not re.search(r"<html[^>]*data-pwned", initial)  # no injected handler ran

    # A wide table scrolls sideways with a sticky id column: the table is wider than its box,
    # which scrolls; the page itself does not get wider.
    assert out["viewport"] == 1280
    assert out["scrollWidth"] > out["clientWidth"] + 200
    assert out["pageScrollWidth"] <= 1280
    assert out["scrolled"] == 200
    id_before, metric_before, head_before = out["before"]
    id_after, metric_after, head_after = out["after"]
    assert out["idPosition"] == "sticky"
    assert abs(id_after - id_before) < 1 and abs(head_after - head_before) < 1
    assert abs((metric_before - metric_after) - 200) < 1
    assert out["onTop"], out["hit"]

    # Sorting, filtering, paging, and a drill-down.
    asc, desc = _numbers(out["asc"]), _numbers(out["desc"])
    assert len(asc) == len(desc) == PAGE_SIZE
    assert asc == sorted(asc) and asc[0] == 0.0
    assert desc == sorted(desc, reverse=True) and desc[0] == 1.0
    assert out["ariaSort"] == "ascending"
    assert out["filtered"] == ["q0007", "q0007"]
    assert out["count"] == "2 of 481 rows match"
    assert out["failed"] and set(out["failed"]) == {"failed"}
    assert out["retrievers"] == ["bm25"]
    assert out["page"] == "2" and out["pageInfo"] == "page 2 of 3 (rows 201\u2013400 of 481)"
    assert out["lastRows"] == 81
    # Hostile text is shown as text, in the row and in the drill-down built by the script.
    assert out["query"] == ["hostile " + PWN]
    assert out["drillImages"] == 0
    assert "answer " + PWN in out["drill"]
    assert f"relevant documents by rank {PWN} at 57, d3 not retrieved" in out["drill"]
    assert "retrieved" in out["drill"] and "document one" not in out["drill"]
    assert not re.search(r"<html[^>]*data-pwned", dom)

    # The screenshot (the page back at its top, unfiltered) is a rendered page, not a blank one.
    assert shot.is_file()
    width, height, pixels = _png_size_and_pixels(shot)
    assert (width, height) == (1280, 2000)
    assert shot.stat().st_size > 20_000
    assert len(set(pixels[:: 97])) > 50  # many distinct byte values across the image


def _png_size_and_pixels(path: Path) -> tuple[int, int, bytes]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    idat = b""
    pos = 8
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind == b"IDAT":
            idat += data[pos + 8:pos + 8 + length]
        pos += 12 + length
    return width, height, zlib.decompress(idat)
