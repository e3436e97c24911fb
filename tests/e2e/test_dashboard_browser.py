"""The dashboard in a real browser: `streamlit run dashboard/app.py` on loopback, driven
by headless Chromium over the DevTools protocol. Every page must load without an
exception on the page and show its data; a screenshot of each lands in the test's tmp
dir (`pytest --basetemp=DIR` keeps them somewhere known). The sample data also carries
`sample.HOSTILE` (markdown and HTML) in every free-text field: the browser must show it
as text, never as a link, an image, a script, a heading or a table.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import dashboard_sample as sample

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
WIDTH, HEIGHT = 1400, 2600
PAGE_TIMEOUT = 90.0  # the first page also waits for MLflow's first import (~6 s here)

# url path (the default page lives at the root), title, texts the page must show
PAGES = [
    ("", "Consortium overview",
     ["First model release", "Multilingual parity", "at risk", "Languages covered"]),
    ("sites", "Sites", ["lumi", "karolina", "marenostrum", "unreachable", "GPU-hours used"]),
    # table cells are drawn on a canvas, so the page's text shows the filters and the timeline
    ("runs", "Runs", ["Partner", "Experiment", "of 8 runs", "Timeline", "Open run r0", "lumi"]),
    ("run", "Run detail", ["Stages", "Jobs", "Log tails", "MLflow run", "Prefect flow run"]),
    ("languages", "Languages", ["bg Bulgarian", "sv Swedish", "Per language"]),
    ("evaluations", "Evaluations", ["Coverage", "Checkpoint × language", "shown in grey"]),
]

pytest.importorskip("websockets")
if not Path(CHROMIUM).exists():
    pytest.skip("headless Chromium is not installed (apt-get install chromium)",
                allow_module_level=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(check: Any, what: str, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.25)


def _get(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return str(response.read().decode())
    except OSError:
        return None


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The sample data with hostile text injected; (home, the failed run's id)."""
    path = tmp_path_factory.mktemp("home")
    sample.fill_home(path)
    return path, sample.inject_hostile(path)


@pytest.fixture(scope="module")
def dashboard_url(home: tuple[Path, str]) -> Iterator[str]:
    home_dir, _ = home
    port = free_port()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HPCFLEET_", "MLFLOW_", "PREFECT_"))}
    env.update(HPCFLEET_HOME=str(home_dir), HPCFLEET_DASHBOARD_REFRESH="3600")
    log = (home_dir / "streamlit.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(REPO / "dashboard" / "app.py"),
         "--server.port", str(port), "--server.address", "127.0.0.1",
         "--server.headless", "true", "--browser.gatherUsageStats", "false",
         "--server.fileWatcherType", "none"],
        cwd=home_dir, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: server.poll() is not None or _get(f"{url}/_stcore/health") == "ok",
                   "the Streamlit server", 60)
        assert server.poll() is None, (home_dir / "streamlit.log").read_text()
        yield url
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


class DevTools:
    """The few DevTools protocol calls the test needs, over one websocket."""

    def __init__(self, websocket_url: str) -> None:
        from websockets.sync.client import connect

        self.socket = connect(websocket_url, max_size=128 * 1024 * 1024, open_timeout=20)
        self.sequence = 0

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.sequence += 1
        self.socket.send(json.dumps({"id": self.sequence, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv(timeout=60))
            if message.get("id") == self.sequence:
                if "error" in message:
                    raise AssertionError(f"{method}: {message['error']}")
                return dict(message.get("result", {}))

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result.get("result", {}).get("value")

    def close(self) -> None:
        self.socket.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevTools]:
    profile = tmp_path_factory.mktemp("chromium-profile")
    process = subprocess.Popen(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={profile}", "--remote-debugging-address=127.0.0.1",
         "--remote-debugging-port=0", f"--window-size={WIDTH},{HEIGHT}", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    devtools = None
    try:
        active = profile / "DevToolsActivePort"
        wait_until(lambda: active.exists() and len(active.read_text().split()) >= 2,
                   "Chromium's DevTools port", 30)
        port = active.read_text().split()[0]
        targets = json.loads(wait_until(lambda: _get(f"http://127.0.0.1:{port}/json/list"),
                                        "the DevTools target list", 30))
        page = next(t for t in targets if t.get("type") == "page")
        devtools = DevTools(page["webSocketDebuggerUrl"])
        devtools.call("Page.enable")
        devtools.call("Emulation.setDeviceMetricsOverride", width=WIDTH, height=HEIGHT,
                      deviceScaleFactor=1, mobile=False)
        yield devtools
    finally:
        if devtools is not None:
            devtools.close()
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


PAGE_STATE = """(() => {
  const text = document.body ? document.body.innerText : "";
  const h1 = document.querySelector("h1");
  return {
    title: h1 ? h1.innerText.trim() : "",
    text: text,
    exceptions: Array.from(document.querySelectorAll('[data-testid="stException"]'))
      .map(e => e.innerText),
    skeletons: document.querySelectorAll('[data-testid="stSkeleton"]').length,
    stale: document.querySelectorAll('[data-stale="true"]').length,
    charts: document.querySelectorAll(".js-plotly-plot").length,
    running: document.querySelectorAll('[data-testid^="stStatusWidgetRunning"]').length,
  };
})()"""


def load(browser: DevTools, url: str, title: str, texts: list[str]) -> dict[str, Any]:
    """Open `url` and wait until the page shows its title and texts and stops changing."""
    browser.call("Page.navigate", url=url)
    seen: dict[str, Any] = {}

    def ready() -> bool:
        state = browser.evaluate(PAGE_STATE) or {}
        done = (state.get("title") == title and not state.get("skeletons")
                and not state.get("stale") and not state.get("running")
                and all(t in state.get("text", "") for t in texts))
        if state.get("exceptions"):
            done = True  # no need to wait: the test fails on it
        stable = done and seen.get("text") == state.get("text")
        seen.clear()
        seen.update(state)
        return stable

    try:
        wait_until(ready, f"{url} to show {title!r} and {texts}", PAGE_TIMEOUT)
    except AssertionError:
        missing = [t for t in texts if t not in seen.get("text", "")]
        raise AssertionError(f"{url}: title {seen.get('title')!r}, missing {missing}; "
                             f"page text: {seen.get('text', '')[:2000]}") from None
    return seen


def screenshot(browser: DevTools, path: Path) -> None:
    shot = browser.call("Page.captureScreenshot", format="png")
    path.write_bytes(base64.b64decode(shot["data"]))


def test_every_page_loads_in_a_real_browser(
    dashboard_url: str, browser: DevTools, tmp_path: Path
) -> None:
    for url_path, title, texts in PAGES:
        state = load(browser, f"{dashboard_url}/{url_path}", title, texts)
        screenshot(browser, tmp_path / f"{url_path or 'overview'}.png")
        assert not state["exceptions"], f"{url_path}: {state['exceptions']}"
        assert "Traceback" not in state["text"], url_path
        assert "Page not found" not in state["text"], url_path
        assert sample.SECRET_ENV_VALUE not in state["text"], url_path
        assert state["charts"] >= 1, f"{url_path}: no chart was drawn"
    assert len(list(tmp_path.glob("*.png"))) == len(PAGES)


HOSTILE_DOM = """(() => {
  const evil = e => /evil|onerror/i.test(e.outerHTML)
    && !(e.getAttribute("href") || "").startsWith("#");  // a heading's own anchor
  return {
    links: Array.from(document.querySelectorAll("a")).filter(evil).map(e => e.outerHTML),
    images: Array.from(document.querySelectorAll("img, image")).filter(evil)
      .map(e => e.outerHTML),
    scripts: Array.from(document.querySelectorAll("script"))
      .filter(e => e.textContent.includes("s()")).length,
    headings: Array.from(document.querySelectorAll("h1, h2, h3, h4, h5, h6"))
      .filter(e => e.innerText.trim() === "H").length,
    tables: document.querySelectorAll('[data-testid="stMarkdownContainer"] table').length,
  };
})()"""


def test_hostile_text_shows_as_text_in_a_real_browser(
    dashboard_url: str, browser: DevTools, home: tuple[Path, str], tmp_path: Path
) -> None:
    _, failed = home
    # as the partner typed it (an invisible word joiner follows `http`)
    typed = ["[sign in again](http", "evil.example/login)", "<img src=x onerror=s()>"]
    for url_path, title, must_show in (
        ("", "Consortium overview", [*typed, ":red[X] $x$"]),
        ("sites", "Sites", typed),
        ("runs", "Runs", ["Timeline"]),
        (f"run?run={failed}", "Run detail", [*typed, "Log tails"]),
        ("languages", "Languages", ["Per language"]),
        ("evaluations", "Evaluations", ["Checkpoint × language"]),
    ):
        load(browser, f"{dashboard_url}/{url_path}", title, must_show)
        screenshot(browser, tmp_path / f"hostile-{url_path.split('?')[0] or 'overview'}.png")
        live = browser.evaluate(HOSTILE_DOM)
        assert live == {"links": [], "images": [], "scripts": 0, "headings": 0, "tables": 0}, (
            url_path, live)
