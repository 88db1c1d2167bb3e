"""The web console in a real headless browser (Debian's chromium driven by Playwright)
against a real `lipdub serve`, with real media: sign in, upload, faces, audio per face,
submit, result, download, history, and the refusals (wrong key, 402, failed task).

Screenshots of each step go to a temporary artifacts directory (printed); with
LIPDUB_CONSOLE_SHOTS=docs/img the main ones are also written there for the README.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import av
import numpy as np
import pytest
from scipy.io import wavfile

from tests.mediagen import no_faces, pan_zoom

from .helpers import MEDIA, Server, server_fixture

CHROMIUM = Path("/usr/bin/chromium")
playwright_api = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium")
DESKTOP = {"width": 1440, "height": 1000}
PHONE = {"width": 390, "height": 844}
DONE_S = 240  # a two-face lip-sync of 3 s on a busy 2-core machine


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("console-media")
    sr, wav = wavfile.read(MEDIA / "videoretalking__audio_1.wav")
    # 2.5 s of real speech: long enough for one 5 s block, short enough to render fast.
    wavfile.write(d / "speech.wav", sr, np.asarray(wav[: int(2.5 * sr)]))
    return {
        "two": pan_zoom(MEDIA / "facerecognition__two_people.jpg", d / "two_faces.mp4", 3.0),
        "none": no_faces(d / "no_face.mp4", 2.0),
        "speech": d / "speech.wav",
    }


server = server_fixture("console-data")


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("console-screenshots")
    print(f"console screenshots: {d}")
    return d


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as p:
        # Never Playwright's own browser download: the system's chromium, sandbox off as
        # CI runs as root.
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield b
        b.close()


class Console:
    """A browser page on the console that refuses every request leaving the machine."""

    def __init__(self, browser: Any, server: Server, shots: Path, viewport: dict[str, int]):
        self.ctx = browser.new_context(viewport=viewport, accept_downloads=True)
        self.offsite: list[str] = []

        def guard(route: Any) -> None:
            host = urlparse(route.request.url).hostname
            if route.request.url.startswith(("blob:", "data:")) or host == "127.0.0.1":
                route.continue_()
            else:
                self.offsite.append(route.request.url)
                route.abort()

        self.ctx.route("**/*", guard)
        self.page = self.ctx.new_page()
        self.page.set_default_timeout(30_000)
        self.server, self.shots = server, shots

    def shot(self, name: str, publish: bool = False) -> None:
        path = self.shots / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        dest = os.environ.get("LIPDUB_CONSOLE_SHOTS")
        if publish and dest:
            # JPEG: the README's pictures stay a few hundred kB in the repository.
            from PIL import Image

            Image.open(path).convert("RGB").save(Path(dest) / f"console_{name}.jpg", quality=85)

    def sign_in(self, key: str) -> None:
        self.page.goto(self.server.url + "/")
        self.page.fill("#key", key)
        self.page.keyboard.press("Enter")  # keyboard: the form submits on Enter

    def identify(self, video: Path) -> None:
        self.page.set_input_files("#video-file", str(video))

    def close(self) -> None:
        assert not self.offsite, f"the console reached off the machine: {self.offsite}"
        self.ctx.close()


@pytest.fixture()
def console(browser: Any, server: Server, shots: Path) -> Iterator[Console]:
    c = Console(browser, server, shots, DESKTOP)
    yield c
    c.close()


def give_audio(page: Any, face: str, speech: Path, keyboard: bool = False) -> Any:
    if keyboard:
        page.focus(f'button.face[data-face="{face}"]')
        page.keyboard.press("Enter")
    else:
        page.click(f'button.face[data-face="{face}"]')
    box = page.locator(f'.assign[data-face="{face}"]')
    box.locator(".audio-file").set_input_files(str(speech))
    box.locator(".editor").wait_for(state="visible")
    return box


def test_wrong_key_is_refused_with_a_clear_message(console: Console) -> None:
    console.sign_in("ld_not_a_key")
    msg = console.page.locator("#signin-msg")
    playwright_api.expect(msg).to_contain_text("This key was not accepted")
    playwright_api.expect(msg).to_contain_text("Invalid API key")
    assert console.page.locator("#nav").is_hidden()
    console.shot("wrong_key")


def test_dub_two_faces_from_upload_to_download(
    console: Console, server: Server, media: dict[str, Path], tmp_path: Path
) -> None:
    page, expect = console.page, playwright_api.expect
    key = server.new_key("studio", "10")
    page.goto(server.url + "/")
    console.shot("signin", publish=True)
    console.sign_in(key)
    expect(page.locator("#drop")).to_be_visible()
    console.identify(media["two"])
    expect(page.locator("#video-status")).to_contain_text("2 face(s) found", timeout=120_000)
    assert page.locator("#video-progress").evaluate("p => p.value") == 1
    expect(page.locator("#faces .span")).to_have_count(2)
    # Spans are drawn to scale: both faces are visible most of the 3 s clip.
    widths = page.locator("#faces .span").evaluate_all("s => s.map(e => parseFloat(e.style.width))")
    assert all(w > 60 for w in widths), widths

    a = give_audio(page, "face_001", media["speech"])
    expect(a.locator(".audio-status")).to_contain_text("2.5 s of audio")
    assert a.locator('input[name="endMs"]').input_value() == "2500"
    # Drag the clip's body to the right on the waveform: the insert point follows.
    canvas = a.locator("canvas").bounding_box()
    y = canvas["y"] + canvas["height"] * 0.75
    page.mouse.move(canvas["x"] + canvas["width"] * 0.3, y)
    page.mouse.down()
    page.mouse.move(canvas["x"] + canvas["width"] * 0.4, y, steps=5)
    page.mouse.up()
    moved = int(a.locator('input[name="insertMs"]').input_value())
    assert 200 <= moved <= 400, moved  # 10 % of the 3 s timeline
    # Drag the right edge left: the crop end shortens.
    right = canvas["x"] + canvas["width"] * (moved + 2500) / 3000
    page.mouse.move(right - 2, y)
    page.mouse.down()
    page.mouse.move(right - canvas["width"] * 0.1, y, steps=5)
    page.mouse.up()
    end = int(a.locator('input[name="endMs"]').input_value())
    assert 2100 <= end <= 2300, end

    b = give_audio(page, "face_002", media["speech"], keyboard=True)
    b.locator('input[name="startMs"]').fill("500")
    b.locator('input[name="startMs"]').press("Tab")
    b.locator('input[name="volume"]').fill("1.5")
    b.locator('input[name="volume"]').press("Tab")
    assert b.locator('input[name="endMs"]').input_value() == "2500"
    page.fill("#orig-volume", "0.2")
    # Two faces, each one started 5 s block at $0.0063.
    expect(page.locator("#price")).to_have_text("$0.0126")
    console.shot("faces_timeline", publish=True)

    page.click("#submit")
    expect(page).to_have_url(re.compile(r"#/task/"))
    console.shot("processing")
    expect(page.locator("#task-state")).to_have_text("completed", timeout=DONE_S * 1000)
    result = page.locator("#result")
    expect(result).to_be_visible()
    page.wait_for_function("document.querySelector('#result').readyState >= 2")
    page.click("#play-both")
    # Both play together: the original follows the result.
    page.wait_for_function(
        "(() => { const r = document.querySelector('#result');"
        " const o = document.querySelector('#original');"
        " return r.currentTime > 0.5 && !o.paused })()"
    )
    page.click("#play-both")
    page.wait_for_function(
        "document.querySelector('#original').paused && document.querySelector('#result').paused"
    )
    console.shot("result", publish=True)

    with page.expect_download() as dl:
        page.click("#download")
    out = tmp_path / "dubbed.mp4"
    dl.value.save_as(out)
    with av.open(str(out)) as c:
        assert c.format.name.startswith("mov,mp4")
        v = c.streams.video[0]
        secs = float(v.duration * v.time_base) if v.duration else c.duration / 1e6
        assert abs(secs - 3.0) < 0.15, secs
        assert c.streams.audio, "the dub has a sound track"

    page.click('nav a[href="#/history"]')
    rows = page.locator("#history tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.nth(0)).to_contain_text("lip-sync")
    expect(rows.nth(0)).to_contain_text("completed")
    expect(rows.nth(0)).to_contain_text("$0.0126")
    expect(rows.nth(1)).to_contain_text("identify")
    console.shot("history", publish=True)
    # Open the identify task again: its faces come back.
    rows.nth(1).locator("a").click()
    expect(page.locator("#faces button.face")).to_have_count(2)

    page.click('nav a[href="#/account"]')
    expect(page.locator("#balance")).to_have_text("$9.9867")
    expect(page.locator("#ledger tbody tr")).to_have_count(5)  # credit, 2 reserves, 2 settles
    expect(page.locator("#prices")).to_contain_text("$0.0063 per started 5 s")
    console.shot("account")

    page.set_viewport_size(PHONE)
    page.click('nav a[href="#/history"]')
    expect(rows).to_have_count(2)
    # Readable at 390 px: nothing wider than the screen but the scrolling table.
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    console.shot("history_390px", publish=True)
    page.click('nav a[href="#/dub"]')
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    console.shot("dub_390px")

    page.click("#signout")
    expect(page.locator("#key")).to_be_visible()
    assert page.evaluate("sessionStorage.length") == 0


def test_402_is_explained_before_anything_is_charged(
    console: Console, server: Server, media: dict[str, Path]
) -> None:
    page, expect = console.page, playwright_api.expect
    # Enough for the upload and an identify ($0.0007), not for a lip-sync ($0.0063).
    console.sign_in(server.new_key("poor", "0.001"))
    console.identify(media["two"])
    expect(page.locator("#video-status")).to_contain_text("face(s) found", timeout=120_000)
    give_audio(page, "face_001", media["speech"])
    page.click("#submit")
    msg = page.locator("#submit-msg")
    expect(msg).to_contain_text("Not enough credit")
    expect(msg).to_contain_text("It needs $0.0063; the balance is $0.0003")
    expect(msg).to_contain_text("Nothing was charged")
    console.shot("insufficient_balance")

    # A key with no credit at all is stopped at the upload, with the same explanation.
    page.click("#signout")
    console.sign_in(server.new_key("broke", "0"))
    console.identify(media["two"])
    status = page.locator("#video-status")
    expect(status).to_contain_text("Not enough credit")
    expect(status).to_contain_text("uploads need a positive balance")


def test_failed_task_shows_its_reason_and_the_refund(
    console: Console, server: Server, media: dict[str, Path]
) -> None:
    page, expect = console.page, playwright_api.expect
    console.sign_in(server.new_key("noface", "1"))
    console.identify(media["none"])
    status = page.locator("#video-status")
    expect(status).to_contain_text("refunded", timeout=120_000)
    expect(status).to_contain_text("face")
    page.click('nav a[href="#/history"]')
    row = page.locator("#history tbody tr")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("failed")
    expect(row).to_contain_text("refunded")
    row.locator("a").click()
    expect(page.locator("#fail-msg")).to_contain_text("face")
    expect(page.locator("#refund")).to_contain_text("$0.0007) was refunded")
    console.shot("failed_task")


def test_api_docs_render_offline(console: Console, server: Server) -> None:
    page, expect = console.page, playwright_api.expect
    page.goto(server.url + "/docs")
    # Swagger UI drew the schema (an older bundle says "Unable to render this definition").
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("lipdub")
    expect(page.get_by_text("/api/v1/account", exact=True).first).to_be_visible()
    console.shot("api_docs")
