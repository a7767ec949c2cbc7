"""Auto-tuning's front ends on the mock device: the tune.run / tune.history syscalls,
POST /v1/tune and GET /v1/tune/history, the SDK and `llmos tune`, with bad paths."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from typer.testing import CliRunner

from llmos.cli.main import build_app
from llmos.devices import MockDevice
from llmos.errors import InvalidRequest, NotFound
from llmos.kernel import Kernel
from llmos.params import Settings
from llmos.sdk import ApiError, AsyncClient, Client
from tests._live_server import LiveServer
from tests.conftest import MockKernel
from tests.test_tune import short_measure


# -- syscalls and routes -------------------------------------------------------------
async def test_routes_run_and_list(mock: MockKernel) -> None:
    short_measure(mock.kernel)
    r = await mock.client.post("/v1/tune", json={"dry_run": True, "max_seconds": 10})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["device"] == "mock0" and body["kept"] is False and body["trials"]
    r = await mock.client.get("/v1/tune/history", params={"limit": 5})
    assert r.status_code == 200 and r.json()["object"] == "list"
    assert [d["id"] for d in r.json()["data"]] == [body["id"]]


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"device": "nope"}, 404, "device"),
        ({"device": ""}, 400, "device"),
        ({"dry_run": "yes"}, 400, "dry_run"),
        ({"max_seconds": 1}, 400, "max_seconds"),
        ({"max_seconds": 10_000}, 400, "max_seconds"),
        ({"slots": 4}, 400, "slots"),
    ],
)
async def test_bad_tune_requests_name_the_field(
    mock: MockKernel, body: dict[str, Any], status: int, param: str
) -> None:
    r = await mock.client.post("/v1/tune", json=body)
    assert r.status_code == status, r.text
    assert r.json()["error"]["param"] == param
    assert not mock.device.reconfigurations


async def test_history_bad_limit(mock: MockKernel) -> None:
    r = await mock.client.get("/v1/tune/history", params={"limit": 0})
    assert r.status_code == 400 and r.json()["error"]["param"] == "limit"


async def test_only_admins_tune_and_a_user_may_read(mock: MockKernel) -> None:
    k = mock.kernel
    admin = k.authenticate("test-admin-token")
    await k.call("user.add", admin, {"name": "bob", "role": "user"})
    token = (await k.call("token.create", admin, {"user": "bob"}))["token"]
    bob = {"Authorization": f"Bearer {token}"}
    r = await mock.client.post("/v1/tune", json={}, headers=bob)
    assert r.status_code == 403, r.text
    assert (await mock.client.get("/v1/tune/history", headers=bob)).status_code == 200
    assert not mock.device.reconfigurations
    audit = await k.call("audit.list", admin, {"outcome": "denied"})
    assert any(a["action"] == "tune.run" for a in audit)


class Fixed(MockDevice):
    kind = "fixed"
    tunable = False


async def test_a_device_that_is_not_tunable_is_refused(tmp_path: Path) -> None:
    kernel = Kernel(Settings(home=tmp_path, admin_token="adm"), [Fixed(name="fixed0")])
    await kernel.start()
    admin = kernel.authenticate("adm")
    for args in ({}, {"device": "fixed0"}):
        with pytest.raises(InvalidRequest) as e:
            await kernel.call("tune.run", admin, args)
        assert e.value.param == "device" and "tunable" in e.value.message
    with pytest.raises(NotFound):
        await kernel.call("tune.run", admin, {"device": "mock0"})
    await kernel.stop()


# -- SDK and CLI ---------------------------------------------------------------------
def cli(server: LiveServer, *args: str) -> Result:
    return CliRunner().invoke(build_app(), [*args, "--url", server.url, "--token", server.token])


def test_sdk_and_cli(server: LiveServer, client: Client) -> None:
    decision = client.tune(dry_run=True, max_seconds=10)
    assert decision["kept"] is False and decision["measured_before"]["tokens_per_s"] > 0
    assert client.tune_history(limit=1)[0]["id"] == decision["id"]
    with pytest.raises(ApiError) as e:
        client.tune("nope")
    assert e.value.status == 404 and e.value.param == "device"

    result = cli(server, "tune", "--dry-run", "--max-seconds", "10")
    assert result.exit_code == 0, result.output
    assert "SLOTS" in result.stdout and "TOK/S" in result.stdout and "before" in result.stdout
    assert "not applied" in result.stdout and "decision #" in result.stdout

    result = cli(server, "tune", "history")
    assert result.exit_code == 0, result.output
    assert f"#{decision['id']}" in result.stdout and "manual" in result.stdout
    assert "tok/s" in result.stdout and "dry run" in result.stdout

    result = cli(server, "tune", "--device", "nope")
    assert result.exit_code == 1 and "no device named 'nope'" in result.output
    assert "Traceback" not in result.output


def test_cli_refuses_a_non_admin(server: LiveServer, client: Client) -> None:
    token = client.add_user("carol", "viewer")["token"]
    result = CliRunner().invoke(build_app(), ["tune", "--url", server.url, "--token", token])
    assert result.exit_code == 1 and "Traceback" not in result.output
    result = CliRunner().invoke(
        build_app(), ["tune", "history", "--url", server.url, "--token", token]
    )
    assert result.exit_code == 0, result.output


async def test_async_sdk(server: LiveServer) -> None:
    async with AsyncClient(server.url, server.token) as c:
        rows = await c.tune_history(limit=3)
        assert isinstance(rows, list)
        with pytest.raises(ApiError) as e:
            await c.tune(max_seconds=1)
        assert e.value.param == "max_seconds"
