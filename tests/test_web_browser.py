"""The web demo in a real browser (Debian's chromium + chromium-driver through Selenium): upload a clip, submit
two sentences, and the annotated video plays in the page; an .mp4 of utils/video.py plays in a tab of its own.

Skipped loudly where chromium, its driver or the optional requirements are missing; under CI (``CI=true``) that
is a failure instead (.ci/run installs them)."""
from __future__ import annotations

import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import missing, require

require("fastapi", "the web demo's optional requirements: pip install -r requirements-web.txt")
require("selenium", "the browser tests: pip install -r requirements-dev.txt")
CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
if CHROMIUM is None or DRIVER is None:
    missing("Debian's chromium and chromium-driver are not installed (apt-get install -y chromium chromium-driver)")

import uvicorn  # noqa: E402
from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from app import web  # noqa: E402
from app.grounder import Grounder  # noqa: E402
from tests.test_grounder import write_checkpoint  # noqa: E402
from tests.test_web_demo import SENTENCES, clip  # noqa: E402, F401 (the clip fixture)

pytestmark = pytest.mark.usefixtures("one_thread")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync")
PLAYBACK = """const v = document.querySelector(arguments[0]);
return v && {ready: v.readyState, error: v.error && v.error.code, duration: v.duration, width: v.videoWidth};"""


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument("--window-size=1280,1000")
    driver = webdriver.Chrome(options=options, service=Service(DRIVER))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def server(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The web demo on a free port of 127.0.0.1 with a random small video model; yields its URL."""
    folder = tmp_path_factory.mktemp("web_browser")
    grounder = Grounder.from_checkpoint(write_checkpoint(folder / "video.pth.tar", "video", tiny_root, "VID"))
    jobs = web.JobQueue(grounder, folder / "work", web.load_examples(tiny_root), None, 5.0, 100)
    instance = uvicorn.Server(uvicorn.Config(web.create_app(jobs, "video.pth.tar"), host="127.0.0.1", port=0,
                                             log_level="warning"))
    thread = threading.Thread(target=instance.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not instance.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the web demo did not start"
        time.sleep(0.05)
    port = instance.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}/"
    instance.should_exit = True
    thread.join(timeout=30)


def test_an_uploaded_clip_comes_back_as_a_video_that_plays_in_the_page(browser: webdriver.Chrome, server: str,
                                                                        clip: Path) -> None:  # noqa: F811
    browser.get(server)
    WebDriverWait(browser, 30).until(lambda d: "words" in d.find_element(By.ID, "model").text)
    browser.find_element(By.ID, "clip").send_keys(str(clip))
    browser.find_element(By.ID, "sentences").send_keys(SENTENCES)
    browser.find_element(By.ID, "submit").click()
    WebDriverWait(browser, 180).until(
        lambda d: d.find_element(By.ID, "error").is_displayed() or (d.execute_script(PLAYBACK, "#video") or {}).get(
            "ready", 0) >= 2)
    assert browser.find_element(By.ID, "error").text == ""
    state = browser.execute_script(PLAYBACK, "#video")
    assert state["ready"] >= 2 and state["error"] is None and state["duration"] > 0 and state["width"] > 0
    assert len(browser.find_elements(By.CSS_SELECTOR, "#plot polyline")) == 2
    assert len(browser.find_elements(By.CSS_SELECTOR, "#boxes tbody tr")) == 10


def test_an_mp4_of_the_video_writer_plays_in_a_tab_opened_on_the_file(browser: webdriver.Chrome,
                                                                      clip: Path) -> None:  # noqa: F811
    browser.get(clip.as_uri())
    WebDriverWait(browser, 30).until(lambda d: (d.execute_script(PLAYBACK, "video") or {}).get("ready", 0) >= 2
                                     or (d.execute_script(PLAYBACK, "video") or {}).get("error"))
    state = browser.execute_script(PLAYBACK, "video")
    assert state["ready"] >= 2 and state["error"] is None and state["duration"] > 0
