"""The cluster's user surface on a mock kernel with one replica group: the syscalls
(cluster.status, cluster.events, cluster.scale), their HTTP routes, the SDK (sync,
against a live loopback server, and async, in-process), the CLI (`llmos cluster`,
`llmos scale`, `llmos ps --devices`) and the Prometheus metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from llmos.api import create_app
from llmos.cli.main import build_app
from llmos.devices import Device, MockDevice
from llmos.errors import Forbidden, InvalidRequest, NotFound
from llmos.kernel import Kernel
from llmos.kernel.fleet import Group, ScalePolicy
from llmos.params import Settings
from llmos.sdk import ApiError, AsyncClient, Client
from tests._live_server import serving

ADMIN = "adm"
# No autoscaling decision of its own during a test: only the orders given here.
STILL = ScalePolicy(min=1, max=3, cooldown_s=3600, idle_s=3600, queue_per_slot=1e9)


def make(name: str) -> Device:
    return MockDevice(name=name, slots=2, token_delay=0.001)


class OnNode(MockDevice):
    """A device that knows the machine it runs on, as a Ray device does."""

    def details(self) -> dict[str, Any]:
        return {"node": "node-a"}


def group_kernel(home: Path) -> Kernel:
    first = make("g-0")
    solo = OnNode(name="solo", model="other", slots=1)
    group = Group("g", STILL, make, [first])
    return Kernel(Settings(home=home, admin_token=ADMIN), [first, solo], [group])


@dataclass
class Api:
    kernel: Kernel
    app: Any
    http: httpx.AsyncClient
    tokens: dict[str, str]  # role -> a token of it

    def auth(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}


@pytest_asyncio.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    kernel = group_kernel(tmp_path)
    await kernel.start()
    admin = kernel.authenticate(ADMIN)
    tokens = {"admin": ADMIN}
    for role in ("user", "viewer"):
        made = await kernel.call("user.add", admin, {"name": f"a-{role}", "role": role})
        tokens[role] = made["token"]
    app = create_app(kernel, manage_kernel=False)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://llmos") as http:
        yield Api(kernel, app, http, tokens)
    await kernel.stop()


def error_of(response: httpx.Response) -> dict[str, Any]:
    error: dict[str, Any] = response.json()["error"]
    return error


# -- syscalls ----------------------------------------------------------------------------
async def test_the_syscalls_check_their_arguments(api: Api) -> None:
    k, admin = api.kernel, api.kernel.authenticate(ADMIN)
    viewer = k.authenticate(api.tokens["viewer"])
    status = await k.call("cluster.status", viewer)
    assert [g["group"] for g in status["groups"]] == ["g"]
    assert status["placement"] == {"mode": "affinity", "counts": {}} and status["events"] == []
    bad: list[tuple[str, dict[str, Any], type[Exception], str]] = [
        ("cluster.events", {"limit": 0}, InvalidRequest, "limit"),
        ("cluster.events", {"limit": True}, InvalidRequest, "limit"),
        ("cluster.events", {"group": 7}, InvalidRequest, "group"),
        ("cluster.events", {"group": "nope"}, NotFound, "group"),
        ("cluster.scale", {"replicas": 2}, InvalidRequest, "group"),
        ("cluster.scale", {"group": "nope", "replicas": 2}, NotFound, "group"),
        ("cluster.scale", {"group": "g"}, InvalidRequest, "replicas"),
        ("cluster.scale", {"group": "g", "replicas": "2"}, InvalidRequest, "replicas"),
        ("cluster.scale", {"group": "g", "replicas": True}, InvalidRequest, "replicas"),
        ("cluster.scale", {"group": "g", "replicas": 4}, InvalidRequest, "replicas"),
    ]
    for name, args, kind, param in bad:
        with pytest.raises(kind) as err:
            await k.call(name, admin, args)
        assert err.value.param == param, (name, args)  # type: ignore[attr-defined]
    with pytest.raises(Forbidden):
        await k.call("cluster.scale", viewer, {"group": "g", "replicas": 2})
    assert await k.call("cluster.events", admin, {}) == []  # nothing was changed


# -- HTTP --------------------------------------------------------------------------------
async def test_scale_over_http_and_read_it_back(api: Api) -> None:
    r = await api.http.post(
        "/v1/cluster/scale", json={"group": "g", "replicas": 2}, headers=api.auth("admin")
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["group"], body["replicas"]) == ("g", 2)
    assert [(e["action"], e["device"], e["replicas"]) for e in body["events"]] == [("up", "g-1", 2)]
    assert body["events"][0]["reason"] == "scaled to 2 by admin"
    r = await api.http.get("/v1/cluster", headers=api.auth("viewer"))
    assert r.status_code == 200
    [g] = r.json()["groups"]
    assert (g["replicas"], g["devices"], g["slots"], g["min"], g["max"]) == (
        2,
        ["g-0", "g-1"],
        4,
        1,
        3,
    )
    assert [e["device"] for e in r.json()["events"]] == ["g-1"]
    r = await api.http.get("/v1/cluster/events?group=g&limit=5", headers=api.auth("user"))
    assert r.status_code == 200 and r.json()["object"] == "list"
    assert [e["action"] for e in r.json()["data"]] == ["up"]
    r = await api.http.get("/v1/sys/devices", headers=api.auth("admin"))
    groups = {d["name"]: (d["group"], d["draining"]) for d in r.json()["data"]}
    assert groups == {"g-0": ("g", False), "g-1": ("g", False), "solo": (None, False)}
    api.kernel.scheduler.draining.add("g-1")
    r = await api.http.get("/v1/sys/devices", headers=api.auth("viewer"))
    assert [d["name"] for d in r.json()["data"] if d["draining"]] == ["g-1"]
    api.kernel.scheduler.draining.discard("g-1")
    r = await api.http.post(
        "/v1/cluster/scale", json={"group": "g", "replicas": 1}, headers=api.auth("admin")
    )
    assert [e["action"] for e in r.json()["events"]] == ["down"]  # this order's only
    assert r.json()["events"][0]["detail"]["moved"] == 0


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"group": "nope", "replicas": 2}, 404, "group"),
        ({"group": "g", "replicas": 9}, 400, "replicas"),
        ({"group": "g", "replicas": 0}, 400, "replicas"),  # below the group's min
        ({"group": "g", "replicas": -1}, 400, "replicas"),
        ({"group": "g", "replicas": "2"}, 400, "replicas"),
        ({"group": "g", "replicas": 1.5}, 400, "replicas"),
        ({"group": "g"}, 400, "replicas"),
        ({"replicas": 2}, 400, "group"),
        ({"group": "", "replicas": 2}, 400, "group"),
        ({"group": "g", "replicas": 2, "zone": "eu"}, 400, "zone"),
    ],
)
async def test_bad_scale_orders_name_the_field(
    api: Api, body: dict[str, Any], status: int, param: str
) -> None:
    r = await api.http.post("/v1/cluster/scale", json=body, headers=api.auth("admin"))
    assert r.status_code == status, r.text
    assert error_of(r)["param"] == param
    assert len(api.kernel.fleet.groups["g"].members) == 1


async def test_only_an_admin_may_scale(api: Api) -> None:
    order = {"group": "g", "replicas": 2}
    r = await api.http.post("/v1/cluster/scale", json=order)
    assert r.status_code == 401 and error_of(r)["type"] == "authentication_error"
    for role in ("user", "viewer"):
        r = await api.http.post("/v1/cluster/scale", json=order, headers=api.auth(role))
        assert r.status_code == 403, (role, r.text)
    assert api.kernel.fleet.events() == []
    r = await api.http.get("/v1/cluster")
    assert r.status_code == 401


async def test_bad_event_queries_are_400_and_404(api: Api) -> None:
    for query, status, param in (
        ("limit=0", 400, "limit"),
        ("limit=1001", 400, "limit"),
        ("limit=x", 400, "limit"),
        ("group=", 400, "group"),
        ("group=nope", 404, "group"),
    ):
        r = await api.http.get(f"/v1/cluster/events?{query}", headers=api.auth("admin"))
        assert r.status_code == status, (query, r.text)
        assert error_of(r)["param"] == param


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {
        tuple(sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    }


async def test_the_metrics(api: Api) -> None:
    headers = api.auth("admin")
    await api.http.post("/v1/cluster/scale", json={"group": "g", "replicas": 3}, headers=headers)
    for _ in range(3):
        r = await api.http.post(
            "/v1/chat/completions",
            json={
                "model": "mock",
                "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 3,
            },
            headers=headers,
        )
        assert r.status_code == 200
    text = (await api.http.get("/metrics", headers=headers)).text
    assert samples(text, "llmos:device_replicas") == {(("group", "g"),): 3.0}
    decisions = samples(text, "llmos:autoscale_decisions_total")
    assert decisions[(("action", "up"), ("group", "g"))] == 2.0
    assert decisions[(("action", "failed"), ("group", "g"))] == 0.0 and len(decisions) == 4
    placed = samples(text, "llmos:placements_total")
    assert set(placed) == {(("rule", r),) for r in ("resume", "affinity", "least-loaded")}
    assert sum(placed.values()) == 3 and placed[(("rule", "least-loaded"),)] >= 1


# -- SDK ---------------------------------------------------------------------------------
async def test_the_async_sdk(api: Api) -> None:
    transport = httpx.ASGITransport(app=api.app)
    async with AsyncClient("http://llmos", ADMIN, transport=transport) as client:
        result = await client.scale("g", 2)
        assert result["replicas"] == 2
        assert [e["device"] for e in await client.cluster_events(group="g")] == ["g-1"]
        assert (await client.cluster())["groups"][0]["replicas"] == 2
        with pytest.raises(ApiError) as err:
            await client.scale("g", 7)
        assert err.value.status == 400 and err.value.param == "replicas"
        with pytest.raises(ApiError) as err:
            await client.cluster_events(group="nope")
        assert err.value.status == 404 and err.value.param == "group"


@pytest.fixture
def live(tmp_path: Path) -> Iterator[str]:
    with serving(create_app(group_kernel(tmp_path))) as url:
        yield url


def test_the_sync_sdk_and_the_cli(live: str) -> None:
    with Client(live, ADMIN) as client:
        assert client.cluster()["groups"][0]["devices"] == ["g-0"]
        with pytest.raises(ApiError) as err:
            client.scale("nope", 2)
        assert err.value.status == 404 and err.value.param == "group"

    def cli(*args: str) -> Any:
        argv = [*args, "--url", live, "--token", ADMIN]
        return CliRunner().invoke(build_app(), argv, env={"COLUMNS": "160"})

    done = cli("scale", "g", "2")
    assert done.exit_code == 0, done.output
    assert done.stdout.splitlines()[0] == "g: 2 replicas" and "scaled to 2 by admin" in done.stdout
    shown = cli("cluster")
    assert shown.exit_code == 0, shown.output
    lines = shown.stdout.splitlines()
    assert lines[0].split()[:3] == ["GROUP", "REPLICAS", "MIN"]
    assert lines[1].split()[:3] == ["g", "2", "1"] and "g-0, g-1" in lines[1]
    assert "placement: affinity" in shown.stdout
    assert any(line.split()[1:4] == ["g", "up", "g-1"] for line in lines)
    devices = cli("ps", "--devices")
    assert devices.exit_code == 0, devices.output
    header, *rows = devices.stdout.splitlines()
    assert header.split()[:5] == ["NAME", "KIND", "MODEL", "GROUP", "NODE"]
    at = next(i for i, r in enumerate(rows) if r.split()[:3] == ["AGE", "GROUP", "ACTION"])
    rows, decisions = rows[:at], rows[at + 1 :]  # the autoscaler's latest decisions follow
    assert decisions[0].split()[1:4] == ["g", "up", "g-1"]
    assert {tuple(r.split()[:5]) for r in rows} == {
        ("g-0", "mock", "mock", "g", "-"),
        ("g-1", "mock", "mock", "g", "-"),
        ("solo", "mock", "other", "-", "node-a"),
    }
    bad = cli("scale", "g", "9")
    assert bad.exit_code == 1 and "between 1 and 3" in bad.stderr
    bad = cli("scale", "g", "two")
    assert bad.exit_code == 2  # a usage error: not a number
    with Client(live, ADMIN) as client:
        assert client.cluster()["groups"][0]["replicas"] == 2
