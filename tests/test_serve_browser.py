"""The `nn serve` page in a real headless Chromium, driven by Playwright: draw, read, screenshot.

Needs Python Playwright (`pip install -e '.[browser]'`) and a Chromium from the system's package
manager (Debian: `apt-get install chromium`; `playwright install` is not used). The browser is
$NN_CHROMIUM, else the first of chromium, chromium-browser, google-chrome on PATH. The
screenshot is written to the test's temporary folder, and also to $NN_SERVE_SCREENSHOT if set
(that is how docs/serve.png is made).
"""

from __future__ import annotations

import json
import os
import urllib.request

import numpy as np
import pytest

import servefakes
from browserfakes import BROWSER, api, browser, draw, models, page, server, settled, to_fixed  # noqa: F401 -- fixtures

playwright_api = pytest.importorskip(
    "playwright.sync_api", reason="Playwright is not installed (pip install -e '.[browser]')")


pytestmark = pytest.mark.skipif(
    BROWSER is None, reason="no Chromium found (apt-get install chromium, or set NN_CHROMIUM to its path)")


@pytest.mark.slow
def test_draw_two_digits_and_read_the_prediction(page, server, models, tmp_path):
    draw(page, "71")
    settled(page)
    label = page.locator("#label").inner_text()
    expected = api(server, page.sent[-1], "cnn")  # what the page sent last, asked directly
    assert label == expected["label"]
    if models[1]:
        assert label == "71"
    assert page.locator("#bars li").count() == 5
    assert page.locator("#bars li").first.inner_text().startswith(expected["label"])
    assert page.locator("#seen").get_attribute("src") == expected["diagnostics"]["input"]
    assert page.locator("#split").inner_text().startswith("Split at the widest empty gap")
    assert page.locator("#warnings li").count() == 0
    shot = tmp_path / "serve.png"
    page.screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000
    if os.environ.get("NN_SERVE_SCREENSHOT"):
        page.screenshot(path=os.environ["NN_SERVE_SCREENSHOT"])


@pytest.mark.slow
def test_one_digit_undo_and_clear(page, server, models):
    page.click("#mode-mlp")
    assert [page.locator("#canvas").get_attribute(a) for a in ("width", "height")] == ["280", "280"]
    draw(page, "7")
    settled(page)
    assert page.locator("#label").inner_text() == api(server, page.sent[-1], "mlp")["label"]
    if models[1]:
        assert page.locator("#label").inner_text() == "7"
    assert page.locator("#split").inner_text() == ""
    seven = page.sent[-1]

    draw(page, "1")  # a second stroke over the first; undo takes it back
    settled(page)
    n = len(page.sent)
    page.click("#undo")
    settled(page)
    assert len(page.sent) == n + 1 and page.sent[-1] == seven  # the same drawing as before
    page.click("#clear")
    settled(page, "idle")
    assert page.locator("#label").inner_text() == "–"


@pytest.mark.slow
def test_bad_uploads_are_explained_on_the_page(page, tmp_path):
    blank = tmp_path / "blank.png"
    blank.write_bytes(servefakes.png(servefakes.Image.new("RGB", (200, 100), "white")))
    page.set_input_files("#upload", str(blank))
    settled(page, "error")
    assert page.locator("#warnings li.bad").inner_text() == "Nothing to read: blank image: no ink found."

    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    page.set_input_files("#upload", str(notes))
    settled(page, "error")
    assert page.locator("#warnings li.bad").inner_text().startswith("Cannot read this image: not an image")

    touching = tmp_path / "touching.png"
    touching.write_bytes(servefakes.drawing("44", gap=-0.35))
    page.set_input_files("#upload", str(touching))
    settled(page)
    assert "digits touch" in page.locator("#warnings").inner_text()


def test_to_fixed_is_the_browsers_own(browser):
    """The tests predict the page's numbers with to_fixed; ties are where Python's rounding differs."""
    cases = [(92.5, 0), (100 * 0.925, 0), (0.5, 0), (1.5, 0), (2.5, 0), (-2.5, 0), (0.0625, 3),
             (-0.0625, 3), (0.1235, 3), (1.005, 2), (-0.0001, 3), (-0.0, 3), (0.0, 1), (12345.678, 1)]
    assert f"{92.5:.0f}" == "92" and round(0.0625, 3) == 0.062  # Python: to the even neighbour
    page = browser.new_page()
    try:
        shown = page.evaluate("(cases) => cases.map(([x, d]) => x.toFixed(d))", cases)
    finally:
        page.close()
    assert shown == [to_fixed(x, d) for x, d in cases]
    assert shown[:2] == ["93", "93"] and shown[6] == "0.063"


@pytest.mark.slow
def test_fits_a_phone(browser, server):
    context = browser.new_context(viewport={"width": 375, "height": 740}, device_scale_factor=2,
                                  is_mobile=True, has_touch=True)
    page = context.new_page()
    page.goto(server.url)
    assert page.evaluate("document.documentElement.scrollWidth") <= 375  # no sideways scrolling
    box = page.locator("#canvas").bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= 375 and box["width"] > 250
    draw(page, "71")
    settled(page)
    assert page.locator("#label").inner_text() != "–"
    context.close()


@pytest.mark.slow
def test_layers_view_fills_as_you_draw_and_shows_a_kernel(page, server, models, tmp_path):
    draw(page, "71")
    settled(page)
    rows = page.locator("#layer-list .layer")
    n_layers = len(api(server, page.sent[-1], "cnn", "explain")["layers"])
    assert rows.count() == n_layers
    assert page.locator(".layer[data-kind=maps] img.atlas").count() >= 2
    assert page.locator("#saliency").is_visible()
    assert page.locator("#saliency").get_attribute("src").startswith("data:image/png;base64,")
    # click the second map of the first convolution's maps: its kernel, as numbers and a picture
    conv = page.locator(".layer[data-kind=maps]").filter(has_text="Conv2d").first.locator("img.atlas").first
    conv.click(position={"x": conv.bounding_box()["width"] * 1.5 / 8, "y": 3})  # 8 maps a row: map 1
    page.locator("#kernel td").first.wait_for(timeout=10_000)
    assert page.locator("#kernel").get_attribute("data-channel") == "1"
    layer = conv.get_attribute("data-layer")
    with urllib.request.urlopen(f"{server.url}api/kernel?model=cnn&layer={layer}&channel=1", timeout=10) as r:
        kernel = json.load(r)
    shown = page.locator("#kernel td").all_inner_texts()
    assert shown == [to_fixed(w, 3) for w in np.ravel(kernel["weights"][kernel["strongest"]])]  # 3x3 weights
    assert page.locator("#kernel img").get_attribute("src").startswith("data:image/png;base64,")
    assert page.locator("#kernel a").get_attribute("href") == "/docs/03-conv2d.md"
    shot = tmp_path / "layers.png"
    page.locator("#layers").screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000
    if os.environ.get("NN_LAYERS_SCREENSHOT"):
        page.screenshot(path=os.environ["NN_LAYERS_SCREENSHOT"], full_page=True,  # the drawing, the first layers
                        clip={"x": 0, "y": 0, "width": 1100, "height": 1500})


@pytest.mark.slow
def test_layers_view_fits_a_phone(browser, server):
    context = browser.new_context(viewport={"width": 375, "height": 740}, device_scale_factor=2,
                                  is_mobile=True, has_touch=True)
    page = context.new_page()
    page.goto(server.url)
    draw(page, "71")
    settled(page)
    assert page.locator("#layer-list .layer").count() > 3
    assert page.evaluate("document.documentElement.scrollWidth") <= 375  # no sideways scrolling
    for img in page.locator("img.atlas").all():
        box = img.bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= 375
    context.close()


@pytest.mark.slow
def test_while_drawing_at_most_one_request_per_250_ms_and_one_in_flight(browser, server):
    context = browser.new_context(viewport={"width": 1100, "height": 640})
    page = context.new_page()
    page.add_init_script("""
        const fetch0 = window.fetch;
        window.calls = [];
        window.fetch = async (...args) => {
          const call = { url: String(args[0]), start: performance.now() };
          window.calls.push(call);
          try { const r = await fetch0(...args); await r.clone().arrayBuffer(); return r; }
          finally { call.end = performance.now(); }
        };""")
    page.goto(server.url)
    box = page.locator("#canvas").bounding_box()
    page.mouse.move(box["x"] + 60, box["y"] + 40)
    page.mouse.down()
    for i in range(80):  # one slow stroke, about 2 s
        page.mouse.move(box["x"] + 60 + 2 * i, box["y"] + 40 + 2 * i)
        page.wait_for_timeout(25)
    page.mouse.up()
    settled(page)
    calls = [c for c in page.evaluate("window.calls") if "/api/explain" in c["url"]]
    assert len(calls) >= 4  # it refreshed while drawing, not only at the end
    for before, after in zip(calls, calls[1:]):
        assert after["start"] - before["start"] >= 249  # at most every 250 ms
        assert after["start"] >= before["end"]  # never two in flight
    context.close()
