"""Alerts over HTTP (GET /v1/alerts, POST /v1/alerts/{id}/clear, /metrics) and the
`llmos alerts` command, good and bad paths."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from click.testing import Result
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from llmos.api import create_app
from llmos.cli.main import build_app
from llmos.devices import MockDevice
from llmos.kernel import Kernel
from llmos.params import Settings
from llmos.sdk import Client
from tests._live_server import LiveServer, serving
from tests.conftest import MockKernel

CHAT = {"model": "mock", "messages": [{"role": "user", "content": "again?"}], "max_tokens": 4}


def alerts_active(text: str) -> dict[str, float]:
    return {
        s.labels["kind"]: s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "llmos:alerts_active"
    }


async def test_alert_routes_and_metrics(mock: MockKernel) -> None:
    c, k = mock.client, mock.kernel
    assert alerts_active((await c.get("/metrics")).text) == {
        "token_rate": 0, "error_rate": 0, "latency": 0, "loop": 0,
    }  # fmt: skip
    made = (await c.post("/v1/processes", json={"name": "looper"})).json()
    as_proc = {"Authorization": f"Bearer {made['token']}"}
    for _ in range(8):
        r = await c.post("/v1/chat/completions", json=CHAT, headers=as_proc)
        assert r.status_code == 200, r.text
    for _ in range(3):
        k.sysmon.sample()
    listed = (await c.get("/v1/alerts")).json()
    assert listed["object"] == "list"
    [alert] = listed["data"]
    assert alert["pid"] == made["pid"] and alert["kind"] == "loop" and alert["value"] == 8
    assert alert["action"] == "throttle" and alert["cleared_at"] is None
    assert alerts_active((await c.get("/metrics")).text)["loop"] == 1
    own = (await c.get("/v1/alerts", headers=as_proc)).json()["data"]
    assert [a["id"] for a in own] == [alert["id"]]

    for params, field in (({"limit": 0}, "limit"), ({"active_only": "maybe"}, "active_only")):
        bad = await c.get("/v1/alerts", params=params)
        assert bad.status_code == 400 and bad.json()["error"]["param"] == field
    missing = await c.post("/v1/alerts/999/clear")
    assert missing.status_code == 404 and missing.json()["error"]["param"] == "id"
    assert (await c.post("/v1/alerts/x/clear")).status_code == 400
    for who in (as_proc, await _user_headers(mock)):
        denied = await c.post(f"/v1/alerts/{alert['id']}/clear", headers=who)
        assert denied.status_code == 403, denied.text

    cleared = (await c.post(f"/v1/alerts/{alert['id']}/clear")).json()
    assert cleared["id"] == alert["id"] and cleared["cleared_at"] is not None
    assert (await c.get("/v1/alerts", params={"active_only": True})).json()["data"] == []
    assert (await c.get("/v1/alerts")).json()["data"][0]["cleared_at"] is not None
    assert alerts_active((await c.get("/metrics")).text)["loop"] == 0
    proc = (await c.get(f"/v1/processes/{made['pid']}")).json()
    assert (proc["priority"], proc["max_concurrent"]) == (20, None)
    last = k.audit.listing(limit=1)[0]
    assert last["action"] == "alert.clear" and last["outcome"] == "allowed"  # privileged


async def _user_headers(mock: MockKernel) -> dict[str, str]:
    admin = mock.kernel.authenticate("test-admin-token")
    await mock.kernel.call("user.add", admin, {"name": "bob", "role": "user"})
    token = (await mock.kernel.call("token.create", admin, {"user": "bob"}))["token"]
    return {"Authorization": f"Bearer {token}"}


# -- the command line ---------------------------------------------------------------
@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    home = tmp_path_factory.mktemp("alerts-cli")
    settings = Settings(home=home, admin_token="adm", sample_interval_s=0.05)
    kernel = Kernel(settings, [MockDevice(slots=2, token_delay=0.001)])
    with serving(create_app(kernel)) as url:
        yield LiveServer(url, "adm", kernel)


def run(server: LiveServer, *args: str, token: str | None = None) -> Result:
    argv = [*args, "--url", server.url, "--token", token or server.token]
    return CliRunner().invoke(build_app(), argv)


def failed(result: Result, code: int) -> str:
    assert result.exit_code == code, result.output
    assert isinstance(result.exception, SystemExit) and "Traceback" not in result.output
    return result.output


def test_the_alerts_command(server: LiveServer) -> None:
    empty = run(server, "alerts")
    assert empty.exit_code == 0 and "no alerts (--all shows cleared ones)" in empty.stdout
    with Client(server.url, server.token) as admin:
        proc = admin.spawn("looper")
        with Client(server.url, proc["token"]) as looper:
            for _ in range(8):
                looper.chat("again?", model="mock", max_tokens=4)
            deadline = time.monotonic() + 30
            while not (alerts := admin.alerts(active_only=True)):
                assert time.monotonic() < deadline, "no alert"
                time.sleep(0.05)
    [alert] = alerts
    listed = run(server, "alerts")
    assert listed.exit_code == 0, listed.output
    assert "loop" in listed.stdout and "throttle" in listed.stdout and "active" in listed.stdout
    assert f"process {proc['pid']} (looper" in listed.stdout.replace("\n", " ")

    failed(run(server, "alerts", "clear", "999"), 1)
    assert "no alert with id 999" in run(server, "alerts", "clear", "999").output
    assert "Usage" in failed(run(server, "alerts", "clear", "one"), 2)
    assert "alert.clear" in failed(run(server, "alerts", "clear", str(alert["id"]),
                                       token=proc["token"]), 1)  # fmt: skip

    done = run(server, "alerts", "clear", str(alert["id"]))
    assert done.exit_code == 0, done.output
    assert done.stdout == f"cleared alert {alert['id']} (process {proc['pid']}, loop)\n"
    assert "no alerts" in run(server, "alerts").stdout
    history = run(server, "alerts", "--all")
    assert "cleared" in history.stdout and "loop" in history.stdout


def test_the_alerts_command_without_a_kernel() -> None:
    result = CliRunner().invoke(
        build_app(), ["alerts", "--url", "http://127.0.0.1:9", "--token", "x"]
    )
    assert "cannot reach the llmos kernel" in failed(result, 1)
