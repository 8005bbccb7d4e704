"""What the browser tests share: the Chromium to drive (Playwright), a server with models, a page,
and drawing on it. Fixtures here are imported by name into the test modules that use them."""

from __future__ import annotations

import json
import os
import shutil
import urllib.request
from decimal import ROUND_HALF_UP, Decimal

import pytest

import servefakes
from servefakes import running_server, strokes

playwright_api = pytest.importorskip(
    "playwright.sync_api", reason="Playwright is not installed (pip install -e '.[browser]')")


def find_browser() -> str | None:
    if os.environ.get("NN_CHROMIUM"):
        return os.environ["NN_CHROMIUM"]
    return next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)


BROWSER = find_browser()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Trained models if there are any (the pipeline's, or tiny ones trained on data/), else random ones."""
    folder = tmp_path_factory.mktemp("models")
    paths = servefakes.trained_models(folder)
    return (paths, True) if paths else (servefakes.untrained_models(folder), False)


@pytest.fixture(scope="module")
def server(models):
    with running_server(models[0]) as s:
        yield s


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=BROWSER, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1100, "height": 640}, device_scale_factor=1)
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text)  # an HTTP error status is logged, and expected
            if m.type == "error" and not m.text.startswith("Failed to load resource") else None)
    page.sent = []  # the image bytes of each prediction request, in order
    page.on("request", lambda r: page.sent.append(r.post_data_buffer) if r.url.endswith("top_k=5") else None)
    page.goto(server.url)
    yield page
    context.close()
    assert errors == []


def draw(page, text: str) -> None:
    """Draw `text` on the page's canvas with the mouse (pointer events), stroke by stroke."""
    box = page.locator("#canvas").bounding_box()
    height = int(page.locator("#canvas").get_attribute("height"))
    k = box["height"] / height  # canvas pixels -> CSS pixels
    for line in strokes(text, height):
        page.mouse.move(box["x"] + line[0][0] * k, box["y"] + line[0][1] * k)
        page.mouse.down()
        for x, y in line[1:]:
            page.mouse.move(box["x"] + x * k, box["y"] + y * k, steps=8)
        page.mouse.up()


def settled(page, state: str = "done") -> None:
    page.locator(f"body[data-state={state}]").wait_for(state="attached", timeout=10_000)


def api(server, body: bytes, model: str, endpoint: str = "predict") -> dict:
    req = urllib.request.Request(f"{server.url}api/{endpoint}?model={model}&top_k=5", data=body,
                                 headers={"Content-Type": "image/png"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.load(r)


def to_fixed(x: float, digits: int) -> str:
    """JavaScript's `x.toFixed(digits)`, to predict the page's numbers: a tie rounds away from zero
    (92.5 -> "93"), where Python's format and round() go to the even neighbour ("92")."""
    return str(Decimal(x or 0.0).quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP))
