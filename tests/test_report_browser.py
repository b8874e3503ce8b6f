"""The report page rendered in headless Chromium: the DOM has the plots, the table, the graphs and the coverage.

The screenshot is kept under test-artifacts/ (gitignored) for a person to look at.
"""
from __future__ import annotations

import html.parser
import shutil
import subprocess
from pathlib import Path

import pytest
from test_report_page import sample_reports, sample_target  # noqa: F401  (fixture)

from scones.harness import report

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars"]


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("headless Chromium is not installed (Debian package `chromium`)")


def run_chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess:
    command = [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, f"{' '.join(command)} failed:\n{completed.stderr[-2000:]}"
    return completed

PROBE = ("<script>window.addEventListener('load', () => document.body.setAttribute('data-loaded-images', "
         "[...document.images].filter(i => i.complete && i.naturalWidth > 0).length));</script>")


class DomSummary(html.parser.HTMLParser):
    """What the test asserts on, collected from the DOM Chromium dumps after rendering."""

    def __init__(self):
        super().__init__()
        self.images: dict[str, dict[str, str]] = {}
        self.table_rows = 0
        self.states: dict[str, str] = {}
        self.svgs = 0
        self.covered_states: dict[str, int] = {}
        self.never_rules: list[str] = []
        self.never_named: list[str] = []
        self._in_never_list = False
        self._in_table = False
        self.loaded_images = None

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "body" and "data-loaded-images" in attributes:
            self.loaded_images = int(attributes["data-loaded-images"])
        elif tag == "img":
            self.images[attributes.get("id", "")] = attributes
        elif tag == "table" and attributes.get("id") == "evaluation-table":
            self._in_table = True
        elif tag == "tr" and self._in_table and attributes.get("class", "").startswith("status-"):
            self.table_rows += 1
        elif tag == "svg" and "state-machine" in attributes.get("class", ""):
            self.svgs += 1
        elif tag == "g" and "data-state" in attributes:
            self.states[f"{self.svgs}:{attributes['data-state']}"] = attributes["data-outcome"]
        elif tag == "g" and "data-covered-state" in attributes:
            self.covered_states[attributes["data-covered-state"]] = int(attributes["data-count"])
        elif tag == "text" and "data-rule" in attributes and "never" in attributes.get("class", ""):
            self.never_rules.append(attributes["data-rule"])
        elif tag == "ul" and attributes.get("id") == "coverage-never":
            self._in_never_list = True

    def handle_data(self, data):
        if self._in_never_list and data.strip().startswith(":"):
            self.never_named.append(data.strip()[1:].strip())

    def handle_endtag(self, tag):
        if tag == "table":
            self._in_table = False
        elif tag == "ul":
            self._in_never_list = False


def test_report_renders_in_headless_chromium_with_plots_table_and_graphs(tmp_path, sample_reports):  # noqa: F811
    page = report.build_report(tmp_path / "report.html", sample_reports, target=sample_target())
    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "report.png"
    screenshot.unlink(missing_ok=True)

    # A probe in a copy of the page records, once loaded, how many images actually decoded.
    probed = tmp_path / "probed.html"
    probed.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    dom = run_chromium(["--virtual-time-budget=5000", "--dump-dom", probed.as_uri()], tmp_path / "profile-dom").stdout
    run_chromium(["--window-size=1280,3400", f"--screenshot={screenshot}", page.as_uri()], tmp_path / "profile-shot")

    summary = DomSummary()
    summary.feed(dom)
    assert summary.loaded_images == 2, "the plots did not decode in the browser"
    for plot in ("plot-confidence-over-time", "plot-confidence-histogram"):
        assert summary.images[plot]["src"].startswith("data:image/png;base64,")
    assert summary.table_rows == 3
    assert summary.svgs == 3   # the two executions and the coverage picture
    assert summary.states == {
        "1:serializeImageData": "succeeded", "1:classifyImage": "succeeded", "1:filterInferences": "succeeded",
        "2:serializeImageData": "succeeded", "2:classifyImage": "succeeded", "2:filterInferences": "failed",
    }
    # Coverage over both executions: every state entered twice; no Retry rule fired, each named twice over:
    # on the picture (red) and in the list beside it.
    assert summary.covered_states == {"serializeImageData": 2, "classifyImage": 2, "filterInferences": 2}
    assert len(summary.never_rules) == 4 and sorted(summary.never_rules) == sorted(summary.never_named)
    assert 'id="drift-result"' in dom and 'id="accuracy"' in dom
    assert screenshot.read_bytes().startswith(b"\x89PNG") and screenshot.stat().st_size > 50_000
    (ARTIFACTS / "report.html").write_text(page.read_text())
