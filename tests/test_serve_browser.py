"""The browser page of ``posekit serve`` in a real headless Chromium (Debian's ``chromium``, driven by Playwright):
it loads offline, takes an uploaded COCO image, draws as many people as the API returns in the schema's colours,
then streams Chromium's fake camera through ``/v1/stream`` and shows the frame rate; screenshots are saved (``$POSEKIT_SCREENSHOT_DIR``, else the test's tmp folder).

Without Chromium (or Playwright) the test skips, except under CI (``CI`` or ``POSEKIT_REQUIRE_BROWSER`` set),
where it fails: CI installs both (.ci/run)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import httpx
import pytest

from serve_util import Server, coco_images, tfpose_args


def chromium_path() -> str:
    exe = os.environ.get("POSEKIT_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    missing = None
    if exe is None:
        missing = "no Chromium executable (apt-get install chromium, or set POSEKIT_CHROMIUM)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            missing = "playwright is not installed (pip install -e '.[serve]')"
    if missing:
        if os.environ.get("CI") or os.environ.get("POSEKIT_REQUIRE_BROWSER"):
            pytest.fail(f"the browser test must run under CI: {missing}")
        pytest.skip(missing)
    return exe


@pytest.fixture(scope="module")
def server():
    chromium_path()
    srv = Server(tfpose_args() + ["--threads", "1"])
    yield srv
    srv.stop()


def test_page_draws_the_people_the_api_returns(server, tmp_path):
    from playwright.sync_api import sync_playwright

    exe = chromium_path()
    path = [p for p in coco_images() if p.name == "000000197388.jpg"][0]  # 5 skiers
    api = httpx.post(server.url + "/v1/pose", content=path.read_bytes(), headers={"Content-Type": "image/jpeg"},
                     timeout=60).json()
    assert len(api["people"]) >= 3
    schema = httpx.get(server.url + "/v1/models").json()["models"][0]["schema"]
    out_dir = Path(os.environ.get("POSEKIT_SCREENSHOT_DIR") or tmp_path)
    requests, errors = [], []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, headless=True, args=[
            "--no-sandbox", "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"])
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 640})
            page.on("request", lambda r: requests.append(r.url))
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(server.url + "/")
            page.wait_for_selector("body[data-ready='1']", timeout=30_000)
            assert page.locator("#model option").all_inner_texts() == ["tfpose-mnv2 (bottom-up)"]
            page.set_input_files("#file", str(path))
            page.wait_for_selector("body[data-drawn='1']", timeout=60_000)
            shown = int(page.inner_text("#people-count"))
            stages = page.locator("#times tbody td:first-child").all_inner_texts()
            # the canvas has the image's size, and at the first confident keypoints the schema's colour
            size = page.evaluate("() => [document.getElementById('canvas').width, "
                                 "document.getElementById('canvas').height]")
            checked = 0
            for person in api["people"]:
                for k, (x, y, s) in enumerate(person["keypoints"]):
                    if s < 0.5 or checked >= 8:
                        continue
                    pixel = page.evaluate(f"() => Array.from(document.getElementById('canvas').getContext('2d')"
                                          f".getImageData({round(x)}, {round(y)}, 1, 1).data)")
                    # other keypoints' dots may overlap this one; one of the drawn colours must be there
                    colours = [schema["keypoint_colors"][j] for q in api["people"]
                               for j, (xx, yy, ss) in enumerate(q["keypoints"])
                               if ss >= 0.3 and abs(xx - x) < 8 and abs(yy - y) < 8]
                    assert any(max(abs(pixel[c] - col[c]) for c in range(3)) <= 40 for col in colours), \
                        (k, pixel, colours)
                    checked += 1
            page.screenshot(path=str(out_dir / "serve_page.png"))
            # live mode: Chromium's fake camera (a test pattern) streamed through /v1/stream; the page shows the
            # frame rate it reaches
            page.click("#webcam")
            page.wait_for_function("() => /frames\\/s/.test(document.getElementById('fps').textContent)",
                                   timeout=60_000)
            page.wait_for_timeout(1500)
            fps_text = page.inner_text("#fps")
            live_size = page.evaluate("() => [document.getElementById('canvas').width, "
                                      "document.getElementById('canvas').height]")
            page.screenshot(path=str(out_dir / "serve_page_live.png"))
            page.click("#webcam")
        finally:
            browser.close()
    assert shown == len(api["people"])
    assert size == [api["image"]["width"], api["image"]["height"]]
    assert checked >= 8
    assert {"decode", "network", "grouping", "sum"} <= set(stages)
    assert all(u.startswith(server.url) for u in requests), requests  # offline: nothing from another host
    assert not errors, errors
    assert (out_dir / "serve_page.png").stat().st_size > 10_000
    assert float(fps_text.split()[0]) > 0 and "dropped" in fps_text, fps_text
    assert live_size != size  # the canvas took the camera's frame size
