"""`llmos top`: the textual screen driven by textual's pilot against a real kernel
served over HTTP (mock device, slow tokens so that a process stays running), the
one-shot `--once` table and the no-terminal path through typer's CliRunner, and the
view functions the two share."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from textual.pilot import Pilot
from textual.widgets import DataTable, Static
from typer.testing import CliRunner

from llmos.api.app import create_app
from llmos.cli import top_view as view
from llmos.cli.main import build_app
from llmos.cli.top_app import Confirm, TopApp
from llmos.devices import MockDevice
from llmos.kernel import Kernel
from llmos.params import Settings
from llmos.sdk import ApiError, Client
from tests._live_server import ADMIN_TOKEN, LiveServer, closed_port_url, live_server, serving

SIZE = (140, 40)
INTERVAL = 0.2  # the app's refresh period in these tests


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[LiveServer]:
    """A kernel over HTTP whose tokens come slowly and whose sampler (per-process
    tokens/s) runs every 0.2 s."""
    settings = Settings(home=tmp_path, admin_token=ADMIN_TOKEN, sample_interval_s=0.2)
    kernel = Kernel(settings, [MockDevice(slots=2, token_delay=0.05)])
    with serving(create_app(kernel)) as url:
        yield LiveServer(url, ADMIN_TOKEN, kernel)


@pytest.fixture
def admin(srv: LiveServer) -> Iterator[Client]:
    with Client(srv.url, srv.token) as c:
        yield c


class Streamer:
    """A long streamed chat under a process's token, in a thread: the process is
    running until it is killed (the stream then ends with the kernel's error)."""

    def __init__(self, url: str, token: str) -> None:
        self.error: ApiError | None = None
        self.deltas = 0
        self._client = Client(url, token)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for _ in self._client.stream("tell me everything", max_tokens=2000):
                self.deltas += 1
        except ApiError as exc:
            self.error = exc
        finally:
            self._client.close()

    def join(self) -> None:
        self._thread.join(timeout=10)
        assert not self._thread.is_alive(), "the stream did not end"


def wait_sync(cond: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


async def wait(
    pilot: Pilot[Any], cond: Callable[[], bool], what: str, timeout: float = 10.0
) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await pilot.pause(0.05)


def procs(app: TopApp) -> DataTable[Any]:
    return app.query_one("#procs", DataTable)


def pids_shown(app: TopApp) -> list[int]:
    table = procs(app)
    return [int(str(table.get_row_at(i)[0])) for i in range(table.row_count)]


def state_shown(app: TopApp, pid: int) -> str | None:
    table = procs(app)
    if str(pid) not in [str(k.value) for k in table.rows]:
        return None
    return str(table.get_row(str(pid))[3])


def rate_shown(app: TopApp, pid: int) -> float:
    return float(str(procs(app).get_row(str(pid))[5]))


def text_of(app: TopApp, selector: str) -> str:
    return str(app.query_one(selector, Static).content)


# -- the live screen ---------------------------------------------------------------
async def test_top_shows_a_running_process_sorts_renices_and_kills(
    srv: LiveServer, admin: Client
) -> None:
    zeta = admin.spawn("zeta")
    alpha = admin.spawn("alpha")
    z, a = zeta["pid"], alpha["pid"]
    stream = Streamer(srv.url, zeta["token"])
    try:
        wait_sync(lambda: admin.process(z)["state"] == "running", "zeta to run")
        app = TopApp(Client(srv.url, srv.token), interval=INTERVAL)
        async with app.run_test(size=SIZE) as pilot:
            await wait(pilot, lambda: state_shown(app, z) == "running", "zeta shown running")
            assert pids_shown(app) == [z, a]  # by PID
            assert "policy" in text_of(app, "#header") and "tok/s" in text_of(app, "#header")
            devices = app.query_one("#devices", DataTable)
            assert [str(c) for c in devices.get_row_at(0)[:3]] == ["mock0", "mock", "1/2"]
            assert "mock: 0" in text_of(app, "#queues")
            assert text_of(app, "#alerts") == "no alerts"
            assert app.selected() is not None and app.selected()["pid"] == z  # type: ignore[index]

            await pilot.press("s")  # NAME, A to Z; the cursor stays on zeta
            assert pids_shown(app) == [a, z]
            assert "NAME ▲" in str(procs(app).border_title)
            assert app.selected()["pid"] == z  # type: ignore[index]
            await pilot.press("S")  # Z to A
            assert pids_shown(app) == [z, a] and "NAME ▼" in str(procs(app).border_title)

            await pilot.press("minus")  # on zeta, still under the cursor
            await wait(pilot, lambda: admin.process(z)["priority"] == 19, "priority 19")
            await wait(pilot, lambda: "priority 19" in text_of(app, "#message"), "the message")
            assert admin.process(a)["priority"] == 20
            for _ in range(3):  # OWNER, STATE, PRIO: the highest priority first
                await pilot.press("s")
            assert "PRIO ▼" in str(procs(app).border_title)
            await wait(pilot, lambda: pids_shown(app) == [a, z], "alpha first by priority")
            await pilot.press("s")  # TOK/S: the one decoding first
            await wait(pilot, lambda: rate_shown(app, z) > 0, "zeta's tokens/s")
            assert pids_shown(app) == [z, a] and rate_shown(app, a) == 0
            tokens_out = procs(app).get_row(str(z))[8]  # its running request's, counted live
            assert int(str(tokens_out)) > 0

            await pilot.press("k")
            assert isinstance(app.screen, Confirm)
            before = app.fetched_at
            await wait(pilot, lambda: app.fetched_at != before, "a refresh behind the question")
            await pilot.press("n")
            assert not isinstance(app.screen, Confirm)
            assert "left running" in text_of(app, "#message")
            assert admin.process(z)["state"] == "running"

            await pilot.press("k", "y")
            await wait(pilot, lambda: admin.process(z)["state"] == "killed", "the kill")
            await wait(pilot, lambda: state_shown(app, z) == "killed", "the row to say killed")
            assert "is killed" in text_of(app, "#message")
            await pilot.press("k")  # an ended process is not asked about again
            assert not isinstance(app.screen, Confirm)
            assert "already killed" in text_of(app, "#message")

            await pilot.press("q")
        assert not app.is_running
        app.client.close()
    finally:
        for pid in (z, a):
            admin.kill(pid)
        stream.join()
    assert stream.error is not None and "killed" in stream.error.message
    assert stream.deltas > 0


async def test_ended_processes_linger_then_show_only_with_a(
    srv: LiveServer, admin: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    gone = admin.spawn("gone")["pid"]
    live = admin.spawn("[/]live[b")["pid"]  # shown as it is, not read as markup
    admin.kill(gone)
    monkeypatch.setattr(view, "ENDED_VISIBLE_S", 0.0)  # ended ones drop off at once
    app = TopApp(Client(srv.url, srv.token), interval=INTERVAL)
    async with app.run_test(size=SIZE) as pilot:
        await wait(pilot, lambda: pids_shown(app) == [live], "only the live process")
        assert str(procs(app).get_row(str(live))[1]) == "[/]live[b"
        await pilot.press("a")
        assert pids_shown(app) == [gone, live]
        assert "all processes" in str(procs(app).border_title)
        assert state_shown(app, gone) == "killed"
        await pilot.press("a")
        assert pids_shown(app) == [live]
        await pilot.press("k")
        assert isinstance(app.screen, Confirm)
        await pilot.press("escape")
        assert not isinstance(app.screen, Confirm)
    app.client.close()


async def test_an_unreachable_kernel_is_a_status_line_not_a_crash() -> None:
    url = closed_port_url()
    app = TopApp(Client(url, "whatever"), interval=INTERVAL)
    async with app.run_test(size=SIZE) as pilot:
        await wait(pilot, lambda: app.query_one("#status").has_class("down"), "the error")
        status = text_of(app, "#status")
        assert f"cannot reach the llmos kernel at {url}" in status and "retrying" in status
        for key in ("s", "S", "k", "plus", "minus", "a"):
            await pilot.press(key)
        assert app.is_running and not isinstance(app.screen, Confirm)
        assert "no process selected" in text_of(app, "#message")
        assert procs(app).row_count == 0
    app.client.close()


async def test_a_kernel_that_goes_away_keeps_the_last_data_on_screen(tmp_path: Path) -> None:
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(live_server(tmp_path))
        with Client(server.url, server.token) as c:
            pid = c.spawn("survivor")["pid"]
        app = TopApp(Client(server.url, server.token), interval=INTERVAL)
        async with app.run_test(size=SIZE) as pilot:
            await wait(pilot, lambda: pids_shown(app) == [pid], "the process")
            stack.close()  # the kernel stops
            await wait(pilot, lambda: app.query_one("#status").has_class("down"), "the error")
            assert "cannot reach" in text_of(app, "#status")
            assert "showing data from" in text_of(app, "#status")
            assert pids_shown(app) == [pid] and app.is_running
        app.client.close()


async def test_a_refused_token_and_a_users_refused_raise(srv: LiveServer, admin: Client) -> None:
    bob = admin.add_user("bob")["token"]
    with Client(srv.url, bob) as as_bob:
        pid = as_bob.spawn("bobs-agent")["pid"]
    app = TopApp(Client(srv.url, bob), interval=INTERVAL)
    async with app.run_test(size=SIZE) as pilot:
        await wait(pilot, lambda: pids_shown(app) == [pid], "bob's process")  # his only
        await pilot.press("plus")
        await wait(pilot, lambda: "✗" in text_of(app, "#message"), "the refusal")
        assert "only an admin may raise a priority" in text_of(app, "#message")
        assert admin.process(pid)["priority"] == 20 and app.is_running
        await pilot.press("minus")  # lowering his own is his right
        await wait(pilot, lambda: admin.process(pid)["priority"] == 19, "priority 19")
    app.client.close()

    app = TopApp(Client(srv.url, "not-a-token"), interval=INTERVAL)
    async with app.run_test(size=SIZE) as pilot:
        await wait(pilot, lambda: app.query_one("#status").has_class("down"), "the refusal")
        assert "refused the token" in text_of(app, "#status")
    app.client.close()


# -- the command -------------------------------------------------------------------
def run(*args: str) -> Result:
    return CliRunner().invoke(build_app(), ["top", *args])


def test_top_once_prints_one_snapshot(srv: LiveServer, admin: Client) -> None:
    pid = admin.spawn("snap")["pid"]
    admin.spawn("[/]odd[b")
    ended = admin.spawn("ended")["pid"]
    admin.kill(ended)
    result = run("--once", "--url", srv.url, "--token", srv.token)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.startswith("policy ") and "tok/s" in out.splitlines()[0]
    row = next(line.split() for line in out.splitlines() if "snap" in line)
    assert row[:5] == [str(pid), "snap", "admin", "ready", "20"]
    assert "ended" not in out and "mock0" in out and "queues  mock: 0" in out
    assert "alerts  none" in out and "[/]odd[b" in out
    every = run("--once", "--all", "--url", srv.url, "--token", srv.token)
    assert every.exit_code == 0 and "killed" in every.stdout


def test_top_without_a_terminal_or_a_kernel_fails_cleanly() -> None:
    no_tty = run("--url", closed_port_url())
    assert no_tty.exit_code == 1 and "--once" in no_tty.stderr
    down = run("--once", "--url", closed_port_url(), "--token", "x")
    assert down.exit_code == 1 and "cannot reach the llmos kernel" in down.stderr
    assert "Traceback" not in down.output
    bad = run("--interval", "0")
    assert bad.exit_code == 2 and "--interval" in bad.stderr


# -- the view ----------------------------------------------------------------------
def test_sorting_puts_big_numbers_first_and_breaks_ties_by_pid() -> None:
    rows = [
        {"pid": 3, "name": "b", "tokens_per_s": 1.0},
        {"pid": 1, "name": "B", "tokens_per_s": 5.0},
        {"pid": 2, "name": "a", "tokens_per_s": None},
    ]
    rate_col = next(i for i, c in enumerate(view.PROC_COLUMNS) if c.key == "tokens_per_s")
    assert [r["pid"] for r in view.sort_rows(rows, rate_col, False)] == [1, 3, 2]
    assert [r["pid"] for r in view.sort_rows(rows, rate_col, True)] == [2, 3, 1]
    assert [r["pid"] for r in view.sort_rows(rows, 1, False)] == [2, 1, 3]  # names, any case


def test_alerts_open_first_with_their_figures() -> None:
    data = {
        "alerts": [
            {"id": 1, "pid": 4, "owner": "bob", "kind": "loop", "message": "same prompt",
             "value": 12, "threshold": 5, "action": "throttled", "created_at": 10.0,
             "cleared_at": 20.0},
            {"id": 2, "pid": None, "kind": "latency", "message": "p95 high",
             "created_at": 5.0, "cleared_at": None},
        ]
    }  # fmt: skip
    lines = view.alert_lines(data)
    assert [line.plain for line in lines] == [
        "latency: system p95 high",
        "loop: pid 4 (bob) same prompt [12 > 5] → throttled",
    ]
    assert lines[0].style == "bold red" and lines[1].style == "dim"
    assert view.alert_lines({}) == []
    assert view.size(1536) == "1.5 KiB" and view.size(None) == "-"
