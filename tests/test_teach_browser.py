"""The backward view and "teach it" on the `nn serve` page, in Debian's Chromium driven by Playwright.

The fixtures and helpers are tests/test_serve_browser.py's (it says what they need). Screenshots go
to the test's temporary folder, and to docs/ when $NN_BACKWARD_SCREENSHOTS is set (how
docs/backward.png, docs/teach.png and docs/backward-phone.png are made).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from test_serve_browser import BROWSER, api, browser, draw, models, page, server, settled  # noqa: F401 -- fixtures

pytestmark = pytest.mark.skipif(
    BROWSER is None, reason="no Chromium found (apt-get install chromium, or set NN_CHROMIUM to its path)")
DOCS = Path(__file__).resolve().parents[1] / "docs"


def shoot(page, tmp_path, name: str, **kw) -> None:
    """A screenshot into the test's folder, and into docs/ if $NN_BACKWARD_SCREENSHOTS is set."""
    shot = tmp_path / name
    page.screenshot(path=str(shot), **kw)
    assert shot.stat().st_size > 10_000
    if os.environ.get("NN_BACKWARD_SCREENSHOTS"):
        page.screenshot(path=str(DOCS / name), **kw)


def test_backward_mode_shows_each_layers_gradient(page, server, tmp_path):
    draw(page, "71")
    settled(page)
    page.click("#dir-backward")
    page.locator("#layer-list[data-direction=backward]").wait_for(timeout=10_000)
    settled(page)
    assert page.sent[-1] is not None
    want = api(server, page.sent[-1], "cnn", "backward")["backward"]
    rows = page.locator("#layer-list .layer[data-index]")
    assert rows.count() == len(want["layers"])
    assert [int(i) for i in rows.evaluate_all("rs => rs.map(r => r.dataset.index)")] == \
        list(range(len(want["layers"]) - 1, -1, -1))  # from the loss down to the input
    assert page.locator("#loss-line").inner_text().startswith(f"The loss of the label {want['label']}: ")
    conv = page.locator(".layer[data-index]").filter(has_text="Conv2d").first
    assert conv.locator(".params img.grad").count() == 2  # the kernels and, beside them, their gradient
    assert conv.locator("a").get_attribute("href") == "/docs/03-conv2d.md"
    assert page.locator(".layer[data-kind=input] img.grad").is_visible()
    shoot(page, tmp_path, "backward.png", full_page=True, clip={"x": 0, "y": 0, "width": 1100, "height": 1500})

    # another label: its loss flows back instead
    other = "07" if want["label"] != "07" else "08"
    page.fill("#grad-label", other)
    page.locator("#loss-line", has_text=f"label {other}:").wait_for(timeout=10_000)
    assert "label=" + other in page.evaluate("performance.getEntriesByType('resource').map(e => e.name).join(' ')")
    page.fill("#grad-label", "7x")  # not a class: marked, and the top class's loss shows
    assert page.locator("#grad-label").get_attribute("aria-invalid") == "true"
    page.click("#dir-forward")
    page.locator("#layer-list[data-direction=forward]").wait_for(timeout=10_000)
