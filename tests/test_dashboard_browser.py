"""The dashboard in headless Chromium (Debian's chromium and its matched
chromedriver, driven by Selenium; `make test` installs them): log in, see a
process that is generating on the real model, kill it from its row, and save a
screenshot (tmp_path/dashboard.png, and test-output/dashboard.png at the repo
root). Also: a wrong token shows the kernel's message and no data; the charts
draw the sampler's history; renice works, and what the kernel refuses is shown
where it was asked."""

from __future__ import annotations

import contextlib
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from llmos.sdk import ApiError, Client
from tests._live_server import LiveServer as MockServer
from tests.conftest import LiveServer

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "test-output"  # a stable copy of the screenshots (gitignored)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
WAIT_S = 60.0  # generous: six jobs may share two cores; nothing here measures speed


@contextlib.contextmanager
def chromium(profile: Path) -> Iterator[WebDriver]:
    """Headless Chromium through chromedriver, both quit on the way out."""
    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if binary is None or driver is None:
        pytest.fail("chromium and chromedriver are needed: `make sysdeps` installs them")
    options = webdriver.ChromeOptions()
    options.binary_location = binary  # with the driver's path: selenium-manager never runs
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(arg)
    service = Service(executable_path=driver, log_output=str(profile.with_suffix(".log")))
    drv = webdriver.Chrome(service=service, options=options)
    try:
        yield drv
    finally:
        drv.quit()  # the browser, then chromedriver


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    with chromium(tmp_path / "chromium-profile") as drv:
        yield drv


def wait_for(drv: WebDriver, what: Callable[[WebDriver], Any], timeout: float = WAIT_S) -> Any:
    return WebDriverWait(drv, timeout, poll_frequency=0.1).until(what)


def visible(drv: WebDriver, css: str) -> WebElement:
    found: WebElement = wait_for(drv, ec.visibility_of_element_located((By.CSS_SELECTOR, css)))
    return found


def log_in(drv: WebDriver, url: str, token: str) -> None:
    drv.get(url + "/ui/")
    visible(drv, "#token").send_keys(token)
    drv.find_element(By.ID, "login").click()
    visible(drv, "#app")


def tab(drv: WebDriver, name: str) -> None:
    drv.find_element(By.ID, f"tab-{name}").click()
    visible(drv, f"#view-{name}")


def row_state(drv: WebDriver, pid: int) -> str | None:
    rows = drv.find_elements(By.CSS_SELECTOR, f'#proc-rows tr[data-pid="{pid}"]')
    return rows[0].get_attribute("data-state") if rows else None


def screenshot(drv: WebDriver, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    assert drv.save_screenshot(str(path))
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 10_000, len(data)
    OUTPUT.mkdir(exist_ok=True)
    shutil.copyfile(path, OUTPUT / name)
    return path


class Generation(threading.Thread):
    """One long chat on a process's token, in the background; keeps how it ended."""

    def __init__(self, url: str, token: str, max_tokens: int) -> None:
        super().__init__(name="dashboard-generation", daemon=True)
        self.url, self.token, self.max_tokens = url, token, max_tokens
        self.error: ApiError | None = None
        self.result: Any = None

    def run(self) -> None:
        with Client(self.url, self.token, timeout=300) as c:
            try:
                self.result = c.chat(
                    "Write a very long story about a lighthouse keeper.",
                    max_tokens=self.max_tokens,
                    temperature=0,
                    ignore_eos=True,  # no early stop: it runs until killed
                )
            except ApiError as e:
                self.error = e


@pytest.mark.model
@pytest.mark.parametrize("live", ["embedded"], indirect=True)
def test_log_in_see_a_running_process_kill_it_and_screenshot(
    live: LiveServer, browser: WebDriver, tmp_path: Path
) -> None:
    log_in(browser, live.url, live.token)
    assert "admin" in browser.find_element(By.ID, "whoami").text
    with Client(live.url, live.token) as admin:
        proc = admin.spawn("dashboard-victim")
        pid = proc["pid"]
        # As long as one slot's context allows (1024 tokens, the prompt included).
        gen = Generation(live.url, proc["token"], max_tokens=900)
        gen.start()
        try:
            tab(browser, "processes")
            wait_for(browser, lambda d: row_state(d, pid) == "running")
            row = browser.find_element(By.CSS_SELECTOR, f'tr[data-pid="{pid}"]')
            assert "dashboard-victim" in row.text and "admin" in row.text
            screenshot(browser, tmp_path, "dashboard.png")

            row.find_element(By.CSS_SELECTOR, f'button.kill[data-pid="{pid}"]').click()
            confirm = wait_for(browser, ec.alert_is_present())
            assert f"Kill process {pid}" in confirm.text
            confirm.accept()
            wait_for(browser, lambda d: row_state(d, pid) == "killed")
            killed_row = browser.find_element(By.CSS_SELECTOR, f'tr[data-pid="{pid}"]')
            assert not killed_row.find_element(By.CSS_SELECTOR, "button.kill").is_displayed()
            assert not browser.find_element(By.ID, "proc-error").is_displayed()
            screenshot(browser, tmp_path, "dashboard-killed.png")

            # The kernel agrees: the process is killed and its generation ended early.
            gen.join(timeout=WAIT_S)
            assert not gen.is_alive()
            assert gen.result is None and gen.error is not None
            assert gen.error.code == "process_killed", gen.error
            after = admin.process(pid)
            assert after["state"] == "killed" and after["finished_at"] is not None
            assert after["tokens_out"] < 900
            deadline = time.monotonic() + WAIT_S
            while admin.top()["running"] and time.monotonic() < deadline:
                time.sleep(0.05)
            assert admin.top()["running"] == 0  # its slot is free
        finally:
            if admin.process(pid)["state"] not in ("killed", "exited"):
                admin.kill(pid)  # a failed step must not leave it generating
            gen.join(timeout=WAIT_S)


@pytest.mark.model
@pytest.mark.parametrize("live", ["embedded"], indirect=True)
def test_charts_draw_the_sampled_history(
    live: LiveServer, browser: WebDriver, tmp_path: Path
) -> None:
    with Client(live.url, live.token) as admin:
        admin.chat("Say hello.", max_tokens=8, temperature=0)
        deadline = time.monotonic() + WAIT_S
        while len(admin.metrics_history(600)) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        samples = len(admin.metrics_history(600))
    assert samples >= 2
    log_in(browser, live.url, live.token)
    tab(browser, "charts")
    queue = visible(browser, '#chart-queue path[data-series="waiting"]')
    assert int(queue.get_attribute("data-points") or 0) >= 2
    assert queue.get_attribute("d").startswith("M")
    svg = browser.find_element(By.CSS_SELECTOR, "#chart-queue svg")
    assert int(svg.get_attribute("data-samples") or 0) >= 2
    for chart in ("chart-latency", "chart-tokens", "chart-cpu"):
        assert browser.find_element(By.ID, chart).find_elements(By.TAG_NAME, "svg")
    tokens = browser.find_element(By.CSS_SELECTOR, '#chart-tokens path[data-series="tokens_per_s"]')
    assert int(tokens.get_attribute("data-points") or 0) >= 2
    screenshot(browser, tmp_path, "dashboard-charts.png")


def test_a_wrong_token_shows_the_kernels_message_and_no_data(
    server: MockServer, browser: WebDriver
) -> None:
    with Client(server.url, server.token) as admin:
        admin.spawn("secret-agent")
    browser.get(server.url + "/ui/")
    visible(browser, "#token").send_keys("not-a-token")
    browser.find_element(By.ID, "login").click()
    error = visible(browser, "#login-error")
    assert "invalid bearer token" in error.text
    assert not browser.find_element(By.ID, "app").is_displayed()
    assert browser.find_elements(By.CSS_SELECTOR, "tr[data-pid]") == []
    assert "secret-agent" not in browser.page_source
    assert browser.execute_script("return sessionStorage.getItem('llmos.token')") is None
    # An empty token is refused in the page, without asking the kernel.
    browser.find_element(By.ID, "token").clear()
    browser.find_element(By.ID, "login").click()
    wait_for(browser, lambda d: d.find_element(By.ID, "login-error").text == "Enter a token.")
    # The right one then works, and logging out forgets it.
    log_in(browser, server.url, server.token)
    tab(browser, "processes")
    visible(browser, "tr[data-pid]")
    browser.find_element(By.ID, "logout").click()
    visible(browser, "#login-view")
    assert browser.execute_script("return sessionStorage.getItem('llmos.token')") is None
    assert "secret-agent" not in browser.find_element(By.ID, "app").get_attribute("textContent")


def test_renice_and_the_kernels_refusals_shown_inline(
    server: MockServer, browser: WebDriver
) -> None:
    headers = {"Authorization": f"Bearer {server.token}"}
    with httpx.Client(base_url=server.url, headers=headers) as http:
        assert http.post("/v1/users", json={"name": "carol", "role": "user"}).status_code == 201
        carol = http.post("/v1/tokens", json={"user": "carol"}).json()["token"]
    with Client(server.url, carol) as c:
        pid = c.spawn("carols-agent", priority=10)["pid"]
    # #token= in the fragment logs in (the fragment never reaches the server).
    browser.get(f"{server.url}/ui/#token={carol}")
    visible(browser, "#app")
    assert "token=" not in browser.current_url
    tab(browser, "processes")
    field = visible(browser, f'input.renice[data-pid="{pid}"]')
    assert field.get_attribute("value") == "10"
    field.send_keys(Keys.CONTROL, "a", Keys.NULL, "5")  # as a person would: select, type
    browser.find_element(By.CSS_SELECTOR, f'button.renice-apply[data-pid="{pid}"]').click()
    with Client(server.url, server.token) as admin:
        deadline = time.monotonic() + WAIT_S
        while admin.process(pid)["priority"] != 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert admin.process(pid)["priority"] == 5
    # Raising a priority is for admins: the kernel's refusal appears on the page.
    field.send_keys(Keys.CONTROL, "a", Keys.NULL, "30", Keys.ENTER)
    error = visible(browser, "#proc-error")
    assert f"renice {pid}" in error.text and "admin" in error.text
    # The audit log is for admins too: its view shows the 403's message.
    tab(browser, "audit")
    denied = visible(browser, "#audit-error")
    assert "audit.list" in denied.text
    assert browser.find_elements(By.CSS_SELECTOR, "#audit-table-rows tr") == []


def test_the_browser_and_its_driver_are_gone_after_quit(tmp_path: Path) -> None:
    """What the fixture starts, it ends: chromedriver and every browser process."""
    with chromium(tmp_path / "profile") as drv:
        driver_proc = psutil.Process(drv.service.process.pid)
        browsers = driver_proc.children(recursive=True)
        assert browsers, "chromedriver started no browser"
        drv.get("about:blank")
    assert drv.service.process.poll() is not None
    _, alive = psutil.wait_procs(browsers, timeout=WAIT_S)
    assert [p for p in alive if _running(p)] == []


def _running(proc: psutil.Process) -> bool:
    """Not gone and not a zombie (an orphan waits for init to reap it)."""
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_files_and_memories_show_their_text_never_their_markup(
    server: MockServer, browser: WebDriver
) -> None:
    markup = '<img src="x" id="pwned" onerror="document.title=\'pwned\'">'
    with Client(server.url, server.token) as admin:
        admin.fs_write("notes/evil.html", f"hello {markup}")
        admin.fs_write("notes/blob.bin", b"\x00\x01\x02binary")
        admin.mem_add(f"remember {markup}", tags=["<b>tag</b>"])
    log_in(browser, server.url, server.token)
    tab(browser, "files")
    browser.find_element(By.CSS_SELECTOR, 'button.file-open[data-path="notes/evil.html"]').click()
    wait_for(browser, lambda d: "hello" in d.find_element(By.ID, "file-content").text)
    assert browser.find_element(By.ID, "file-content").text == f"hello {markup}"
    assert "notes/evil.html" in browser.find_element(By.ID, "file-title").text
    browser.find_element(By.CSS_SELECTOR, 'button.file-open[data-path="notes/blob.bin"]').click()
    wait_for(browser, lambda d: "binary content" in d.find_element(By.ID, "file-content").text)
    # Listing by prefix; a prefix the kernel refuses shows its message.
    browser.find_element(By.ID, "file-prefix").send_keys("notes/evil", Keys.ENTER)
    wait_for(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#file-table-rows tr")) == 1)
    prefix = browser.find_element(By.ID, "file-prefix")
    prefix.send_keys(Keys.CONTROL, "a", Keys.NULL, "x" * 1100, Keys.ENTER)
    error = visible(browser, "#file-error")
    assert "prefix must be a string of at most 1024 characters" in error.text
    assert browser.find_elements(By.CSS_SELECTOR, "#file-table-rows tr") == []
    tab(browser, "memory")
    cell = visible(browser, "#mem-table-rows td.text")
    assert cell.text == f"remember {markup}"
    assert "<b>tag</b>" in browser.find_element(By.CSS_SELECTOR, "#mem-table-rows").text
    browser.find_element(By.ID, "mem-query").send_keys("remember", Keys.ENTER)
    wait_for(browser, lambda d: "best matches" in d.find_element(By.ID, "mem-note").text)
    assert browser.find_elements(By.ID, "pwned") == []
    assert browser.execute_script("return document.title") == "llmos dashboard"


def test_auto_refresh_can_be_paused(server: MockServer, browser: WebDriver) -> None:
    log_in(browser, server.url, server.token)
    tab(browser, "processes")
    browser.find_element(By.ID, "auto").click()  # pause
    assert not browser.find_element(By.ID, "auto").is_selected()
    with Client(server.url, server.token) as admin:
        pid = admin.spawn("while-paused")["pid"]
    time.sleep(3 * 2.0)  # three refresh periods: a running timer would have shown it
    assert row_state(browser, pid) is None
    browser.find_element(By.ID, "refresh").click()  # a manual refresh still works
    wait_for(browser, lambda d: row_state(d, pid) == "ready")


def test_alerts_are_shown_everywhere_and_an_admin_clears_one(
    server: MockServer, browser: WebDriver
) -> None:
    with Client(server.url, server.token) as admin:
        pid = admin.spawn("noisy")["pid"]
    message = f"process {pid} decodes 500 tokens/s <script>document.title='x'</script>"
    # As the anomaly detector raises one (kernel/anomaly.py), without the wait.
    alert = server.kernel.anomalies.alerts.add(
        pid, "admin", "token_rate", message, 500.0, 100.0, "alert"
    )
    log_in(browser, server.url, server.token)
    assert visible(browser, "#summary .alert-badge").text == "1 alert"
    assert message in visible(browser, "#overview-alerts").text
    assert browser.find_element(By.CSS_SELECTOR, '[data-testid="alerts"] b').text == "1"
    tab(browser, "alerts")
    row = visible(browser, f'#alert-table-rows tr[data-alert="{alert.id}"]')
    assert "token_rate" in row.text and message in row.text and "open" in row.text
    row.find_element(By.CSS_SELECTOR, "button.clear-alert").click()
    cleared = f'#alert-table-rows tr[data-alert="{alert.id}"].cleared'
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, cleared))
    assert browser.find_elements(By.CSS_SELECTOR, "button.clear-alert") == []
    wait_for(browser, lambda d: not d.find_elements(By.CSS_SELECTOR, "#summary .alert-badge"))
    headers = {"Authorization": f"Bearer {server.token}"}
    listed = httpx.get(f"{server.url}/v1/alerts", headers=headers).json()["data"]
    assert [a["cleared_at"] is not None for a in listed if a["id"] == alert.id] == [True]
    assert browser.execute_script("return document.title") == "llmos dashboard"
