"""The report page rendered in headless Chromium: SVG charts, hovering highlights words,
the step slider re-renders a probe.

Skipped when no Chromium / Chrome binary is installed (``apt-get install chromium``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

# Runs after the page's own script: counts decoded images and scripts, hovers the first
# interaction row of every probe and records which prompt words light up.
CHECK = """<script>
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var out = document.createElement('div');
  out.id = 'render-check';
  out.setAttribute('data-images', imgs.length);
  out.setAttribute('data-decoded', imgs.filter(function (i) {
    return i.complete && i.naturalWidth > 0; }).length);
  out.setAttribute('data-scripts', document.scripts.length);
  var probes = document.querySelectorAll('.probe'), hover = [];
  probes.forEach(function (p) {
    var row = p.querySelector('.ix-row');
    row.dispatchEvent(new MouseEvent('mouseenter'));
    var lit = Array.prototype.map.call(p.querySelectorAll('.pl.hl'),
      function (w) { return w.getAttribute('data-p') + ':' + w.getAttribute('data-cat'); });
    hover.push(row.getAttribute('data-players') + '|' + row.getAttribute('data-cat') + '|' +
      lit.join(' ') + '|' + p.classList.contains('focus'));
    row.dispatchEvent(new MouseEvent('mouseleave'));
  });
  out.setAttribute('data-hover', hover.join(';'));
  out.setAttribute('data-cleared', document.querySelectorAll('.pl.hl').length);
  out.setAttribute('data-charts', document.querySelectorAll('figure svg').length);
  var labels = [];
  probes.forEach(function (p) {
    var s = p.querySelector('input.step');
    s.value = '0';
    s.dispatchEvent(new Event('input'));
    labels.push(p.querySelector('.step-label').textContent + '/' +
      p.querySelectorAll('.ix-row').length);
  });
  out.setAttribute('data-steps', labels.join(';'));
  document.body.appendChild(out);
});
</script>"""


def _browser() -> str | None:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return "/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None


def test_page_renders_in_headless_chromium(full_report, full_run, tmp_path):
    browser = _browser()
    if browser is None:
        pytest.skip("no Chromium/Chrome binary on PATH (apt-get install chromium)")
    page = full_report.html.read_text(encoding="utf-8")
    checked = tmp_path / "checked.html"
    checked.write_text(page.replace("</body>", CHECK + "</body>"), encoding="utf-8")
    cmd = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=5000",
        "--dump-dom",
        checked.as_uri(),
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    except subprocess.TimeoutExpired:
        pytest.fail("headless Chromium did not finish within 90 s")
    dom = proc.stdout
    assert proc.returncode == 0 and dom, proc.stderr[-2000:]
    m = re.search(r'<div id="render-check"([^>]*)>', dom)
    assert m, "the check script did not run:\n" + proc.stderr[-2000:]
    attrs = dict(re.findall(r'data-([a-z]+)="([^"]*)"', m.group(1)))

    assert attrs["images"] == "0" and attrs["charts"] == "6"  # inline SVG, no PNG
    # the probe data (JSON), the page's and the check's: the prompt's <script> is text
    assert attrs["scripts"] == "3"
    assert "&lt;script&gt;alert" in dom
    assert dom.count('class="pl"') == sum(len(p.words) for p in full_run.probes)

    hovers = attrs["hover"].split(";")
    assert len(hovers) == len(full_run.probes)
    for hover in hovers:
        players, cat, lit, focus = hover.split("|")
        assert players and cat in ("preserved", "emerged", "salient")
        assert lit.split() == [f"{p}:{cat}" for p in players.split()]
        assert focus == "true"
    assert attrs["cleared"] == "0"  # mouseleave takes the highlight away
    for label in attrs["steps"].split(";"):  # the slider re-renders the probe at step 0
        text, rows = label.split("/")
        assert text == "step 0" and int(rows) > 0
