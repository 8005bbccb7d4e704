"""The backward view, "teach it" and "watch it learn" on the `nn serve` page, in Debian's Chromium driven by Playwright.

The fixtures and helpers are tests/test_serve_browser.py's (it says what they need). Screenshots go
to the test's temporary folder, and to docs/ when $NN_BACKWARD_SCREENSHOTS is set (how
docs/backward.png, docs/teach.png and docs/backward-phone.png are made).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nn.mnist.watch import Watch
from browserfakes import BROWSER, api, browser, draw, models, page, server, settled, to_fixed  # noqa: F401 -- fixtures
from servefakes import folder  # noqa: F401 -- a fixture
from servefakes import params as watch_params

# A browser test takes over 2 s (a page, drawing, the server's answers): `make test-fast` skips them.
pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    BROWSER is None, reason="no Chromium found (apt-get install chromium, or set NN_CHROMIUM to its path)")]
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
    page.evaluate("window.scrollTo(0, 0)")
    top = page.locator("#layers").bounding_box()["y"]  # the layers card, from the loss down
    shoot(page, tmp_path, "backward.png", full_page=True, clip={"x": 0, "y": top - 10, "width": 1100, "height": 1500})

    # another label: its loss flows back instead
    other = "07" if want["label"] != "07" else "08"
    page.fill("#grad-label", other)
    page.locator("#loss-line", has_text=f"label {other}:").wait_for(timeout=10_000)
    assert "label=" + other in page.evaluate("performance.getEntriesByType('resource').map(e => e.name).join(' ')")
    page.fill("#grad-label", "7x")  # not a class: marked, and the top class's loss shows
    assert page.locator("#grad-label").get_attribute("aria-invalid") == "true"
    page.click("#dir-forward")
    page.locator("#layer-list[data-direction=forward]").wait_for(timeout=10_000)


def test_teach_it_and_reset(page, server, tmp_path):
    draw(page, "71")
    settled(page)
    page.fill("#teach-label", "7")  # one digit for the CNN: not a label of it
    page.click("#teach-go")
    assert page.locator("#teach-result .error").inner_text() == "Type the label to teach: two digits."
    sessions = len(server.sessions)
    page.fill("#teach-label", "42")
    page.select_option("#teach-steps", "3")
    page.click("#teach-go")
    page.locator("body[data-teach=done]").wait_for(state="attached", timeout=10_000)
    before = page.locator("#teach-before").inner_text()
    after = page.locator("#teach-after").inner_text()
    assert before.startswith("Before: reads ") and after.startswith("After 3 steps at lr 0.01: reads ")
    losses = [float(v) for v in page.locator("#teach-losses").inner_text().split(": ")[1].split(" → ")]
    assert len(losses) == 4 and losses[-1] < losses[0]
    assert f"loss of 42: {losses[0]:.4f}" in before and f"loss of 42: {losses[-1]:.4f}" in after
    conv = len([v for v in api(server, page.sent[-1], "cnn", "backward")["backward"]["layers"] if v["type"] == "Conv2d"])
    assert page.locator("#teach-result img.grad").count() == 3 * conv  # before, after, change
    assert len(server.sessions) == sessions + 1
    page.evaluate("window.scrollTo(0, 0)")  # bounding boxes are the viewport's: page coordinates at the top
    bottom = page.locator("#teach").bounding_box()
    shoot(page, tmp_path, "teach.png", full_page=True,  # the drawing and the lesson
          clip={"x": 0, "y": 0, "width": 1100, "height": bottom["y"] + bottom["height"] + 10})
    # a second lesson goes on from the first, on the same copy
    page.select_option("#teach-steps", "1")
    page.click("#teach-go")
    page.locator("#teach-result", has_text="taught 4 steps").wait_for(timeout=10_000)
    assert f"loss of 42: {losses[-1]:.4f}" in page.locator("#teach-before").inner_text()
    assert len(server.sessions) == sessions + 1
    # the served model still reads the drawing as before
    assert page.locator("#label").inner_text() == api(server, page.sent[-1], "cnn")["label"]
    page.click("#teach-reset")
    page.locator("body[data-teach=reset]").wait_for(state="attached", timeout=10_000)
    assert len(server.sessions) == sessions
    page.click("#teach-go")  # after a reset: a fresh copy, from the served model's loss
    page.locator("body[data-teach=done]").wait_for(state="attached", timeout=10_000)
    assert f"loss of 42: {losses[0]:.4f}" in page.locator("#teach-before").inner_text()


def test_backward_and_teach_fit_a_phone(browser, server, tmp_path):
    context = browser.new_context(viewport={"width": 375, "height": 740}, device_scale_factor=2,
                                  is_mobile=True, has_touch=True)
    page = context.new_page()
    page.goto(server.url)
    draw(page, "71")
    settled(page)
    page.click("#dir-backward")
    page.locator("#layer-list[data-direction=backward]").wait_for(timeout=10_000)
    page.fill("#teach-label", "71")
    page.click("#teach-go")
    page.locator("body[data-teach=done]").wait_for(state="attached", timeout=10_000)
    assert page.evaluate("document.documentElement.scrollWidth") <= 375  # no sideways scrolling
    for img in page.locator("img.grad:visible").all():
        box = img.bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= 375, box
    page.locator("#loss-line").scroll_into_view_if_needed()  # the backward view, from the loss down
    shoot(page, tmp_path, "backward-phone.png")
    context.close()


def test_watch_it_learn_start_and_stop(browser, server, folder, tmp_path):
    """A run on tiny fake data with a tiny network (tests/test_watch.py's), started and stopped on the page."""
    server.watch = Watch(folder, watch_params(), steps=100_000, every=3)
    context = browser.new_context(viewport={"width": 1100, "height": 900}, device_scale_factor=1)
    page = context.new_page()
    try:
        page.goto(server.url)
        page.locator("body[data-watch=idle]").wait_for(state="attached", timeout=10_000)
        page.click("#watch-start")
        page.locator("body[data-watch=running]").wait_for(state="attached", timeout=10_000)
        page.locator("#watch-digits figure").nth(7).wait_for(timeout=60_000)  # the eight test images
        page.locator("#watch-status", has_text="step 6 ").wait_for(timeout=60_000)
        assert page.locator("#watch-kernels").get_attribute("src").startswith("data:image/png;base64,")
        assert page.locator("#watch-start").is_disabled()
        page.click("#watch-stop")
        page.locator("body[data-watch=stopped]").wait_for(state="attached", timeout=30_000)
        view = server.watch.view()
        status = page.locator("#watch-status").inner_text()
        last = view["points"][-1]
        assert status.startswith("Stopped. · step ") and f"step {last['step']} of 100000" in status
        captions = page.locator("#watch-digits figcaption").all_inner_texts()
        assert captions == [f"{label}: reads {p['label']} ({to_fixed(100 * p['probability'], 0)} %)"
                            for label, p in zip(view["labels"], last["predictions"])]
        page.locator("#watch").scroll_into_view_if_needed()
        shot = tmp_path / "watch.png"
        page.locator("#watch").screenshot(path=str(shot))
        assert shot.stat().st_size > 5_000
    finally:
        context.close()
        server.watch.close()
        server.watch = None
