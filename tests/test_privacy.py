"""Telemetry export with ε-differential privacy (kernel/privacy.py): the noise has the
scale the privacy claim needs, each row's influence is bounded, and no raw row leaves
through GET /v1/telemetry/export."""

from __future__ import annotations

import json
import math
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import pytest_asyncio
from typer.testing import CliRunner

from llmos.api import create_app
from llmos.cli.main import build_app
from llmos.devices import MockDevice
from llmos.errors import InvalidRequest
from llmos.kernel import Kernel
from llmos.kernel.privacy import (
    HOUR,
    IMPLICIT_APP,
    LATENCY_BUCKETS,
    SENSITIVITY,
    STATS,
    TTFT_BUCKETS,
    Row,
    aggregate,
    check_epsilon,
    export,
)
from llmos.params import MAX_EPSILON, TELEMETRY_OUTPUT_CLIP, TELEMETRY_PROMPT_CLIP, Settings
from llmos.sdk import Client
from tests._live_server import LiveServer

NOW_HOUR = 480_000  # an epoch hour (2024-10-04)
ROWS = [Row("app", NOW_HOUR * HOUR + i, 100 + i, 20, 0.3 + i / 100, 0.05) for i in range(40)]


def draws(epsilon: float, n: int = 3000, seed: int = 0) -> dict[str, np.ndarray]:
    """`n` exports of ROWS: each statistic's noise (released minus true value)."""
    rng = np.random.default_rng(seed)
    truth = aggregate(ROWS, ["app"], [NOW_HOUR])[0]
    noise: dict[str, list[float]] = {"requests": [], "prompt_tokens": [], "latency_s": []}
    for _ in range(n):
        cell = export(ROWS, ["app"], [NOW_HOUR], epsilon, rng)["data"][0]
        noise["requests"].append(cell["requests"] - truth[0])
        noise["prompt_tokens"].append(cell["prompt_tokens"] - truth[1])
        noise["latency_s"].append(cell["latency_s"][2] - truth[3 + 2])  # the 0.25-0.5 bucket
    return {k: np.asarray(v) for k, v in noise.items()}


@pytest.mark.parametrize("epsilon", [0.2, 1.0, 5.0])
def test_noise_scale_is_sensitivity_over_epsilon_share(epsilon: float) -> None:
    """Laplace(b): the mean absolute deviation is b, the standard deviation b·√2.
    3000 draws put the estimate within ±4% of b (1σ ≈ 1.8%); the bound is 10%."""
    noise = draws(epsilon)
    for name, values in noise.items():
        b = SENSITIVITY[name] / (epsilon / len(STATS))
        assert abs(np.mean(np.abs(values)) / b - 1) < 0.10, (name, np.mean(np.abs(values)), b)
        assert abs(np.std(values) / (b * math.sqrt(2)) - 1) < 0.15, name
        assert abs(np.mean(values)) < 0.1 * b  # unbiased


def test_smaller_epsilon_means_more_noise() -> None:
    spread = [np.mean(np.abs(draws(e, n=1000, seed=1)["requests"])) for e in (4.0, 1.0, 0.25)]
    assert spread[0] < spread[1] < spread[2]
    assert spread[2] > 10 * spread[0]


def test_the_response_states_the_mechanism_and_each_scale() -> None:
    out = export(ROWS, ["app"], [NOW_HOUR], 2.0, np.random.default_rng(0))
    assert out["mechanism"] == "laplace" and out["epsilon"] == 2.0
    assert out["privacy_unit"] == "one request (one telemetry row)"
    assert "sequential" in out["composition"] and "parallel" in out["composition"]
    stats = out["statistics"]
    assert sorted(stats) == sorted(STATS)
    assert sum(s["epsilon"] for s in stats.values()) == pytest.approx(2.0)
    assert stats["requests"]["scale"] == pytest.approx(1 / 0.4)
    assert stats["prompt_tokens"]["scale"] == pytest.approx(TELEMETRY_PROMPT_CLIP / 0.4)
    assert stats["output_tokens"]["clip"] == TELEMETRY_OUTPUT_CLIP
    assert stats["latency_s"]["buckets"] == LATENCY_BUCKETS
    assert len(out["data"][0]["ttft_s"]) == len(TTFT_BUCKETS) and TTFT_BUCKETS[-1] == "none"


def test_each_row_counts_once_and_clipped() -> None:
    rows = [
        Row("a", NOW_HOUR * HOUR, 10**6, 10**6, 0.05, None),  # huge: clipped
        Row("a", NOW_HOUR * HOUR + 10, -5, 3, 100.0, 0.3),  # negative: counts as 0
        Row("b", (NOW_HOUR - 1) * HOUR, 7, 7, 1.0, 1.0),  # another hour
        Row("c", NOW_HOUR * HOUR, 7, 7, 1.0, 1.0),  # an app outside the grid
        Row("a", (NOW_HOUR + 1) * HOUR, 7, 7, 1.0, 1.0),  # an hour outside the grid
    ]
    cells = aggregate(rows, ["a", "b"], [NOW_HOUR - 1, NOW_HOUR])
    a_now, b_before = cells[1], cells[2]
    assert a_now[0] == 2
    assert a_now[1] == TELEMETRY_PROMPT_CLIP and a_now[2] == TELEMETRY_OUTPUT_CLIP + 3
    latency, ttft = a_now[3 : 3 + len(LATENCY_BUCKETS)], a_now[3 + len(LATENCY_BUCKETS) :]
    assert latency[0] == 1 and latency[-1] == 1 and latency.sum() == 2
    assert ttft[-1] == 1 and ttft.sum() == 2  # "none" for the row without a first token
    assert b_before[0] == 1 and cells[0][0] == 0 and cells[3][0] == 0
    assert cells.sum() == a_now.sum() + b_before.sum()  # nothing else counted anywhere


@pytest.mark.parametrize(
    "value", [None, "abc", "", True, [1], 0, -1, "0", float("nan"), float("inf"), 1e9]
)
def test_bad_epsilon(value: Any) -> None:
    with pytest.raises(InvalidRequest) as exc:
        check_epsilon(value)
    assert exc.value.param == "epsilon"


def test_good_epsilon() -> None:
    assert check_epsilon("0.5") == 0.5
    assert check_epsilon(3) == 3.0
    assert check_epsilon(MAX_EPSILON) == MAX_EPSILON


# -- over HTTP -------------------------------------------------------------------------
RAW = {"prompt_tokens": 1234, "output_tokens": 567, "total_s": 3.14159, "ttft_s": 0.271828}


@pytest_asyncio.fixture
async def api(tmp_path: Path) -> AsyncIterator[tuple[Kernel, httpx.AsyncClient]]:
    k = Kernel(Settings(home=tmp_path, admin_token="test-admin"), [MockDevice()])
    await k.start()
    alice = k.tokens.issue("alice", "user")[1]
    proc, _ = k.spawn(alice, "summarizer", 20)
    implicit = k.process_of(alice)  # named "alice:implicit": exported as "(implicit)"
    for i, pid in enumerate((proc.pid, proc.pid, implicit.pid)):
        k.store.add_telemetry(
            {
                "request_id": f"req-secret-{i}",
                "owner": "alice",
                "pid": pid,
                "model": "mock",
                "device": "mock-0",
                "kind": "chat",
                "priority": 20,
                "cached_tokens": 0,
                "max_tokens": 64,
                "queue_wait_s": 0.001,
                "finish_reason": "stop",
                "created_at": time.time() - 60,
                "preemptions": 0,
                "session": str(pid),
                **RAW,
            }
        )
    app = create_app(k, manage_kernel=False)
    transport = httpx.ASGITransport(app=app)
    headers = {"Authorization": "Bearer test-admin"}
    async with httpx.AsyncClient(
        transport=transport, base_url="http://llmos", headers=headers
    ) as client:
        yield k, client
    await k.stop()


def numbers(value: Any) -> list[float]:
    if isinstance(value, dict):
        return [n for v in value.values() for n in numbers(v)]
    if isinstance(value, list):
        return [n for v in value for n in numbers(v)]
    return [float(value)] if isinstance(value, int | float) and not isinstance(value, bool) else []


async def test_export_releases_only_noisy_aggregates(
    api: tuple[Kernel, httpx.AsyncClient],
) -> None:
    _, client = api
    r = await client.get("/v1/telemetry/export", params={"epsilon": 1, "hours": 3})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["window"]["hours"] == 3
    assert {row["app"] for row in out["data"]} == {"summarizer", IMPLICIT_APP}
    assert len(out["data"]) == 2 * 3  # every (app, hour) cell, empty ones too
    for row in out["data"]:
        assert set(row) == {"app", "hour", *STATS}
    text = r.text
    for secret in ("alice", "req-secret", "owner", "pid", "request_id", "mock-0"):
        assert secret not in text
    released = numbers(out["data"])
    for raw in RAW.values():  # (a noisy value equal to one by chance: odds below 1e-6)
        assert raw not in released  # no single row's value, anywhere in the data


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ({}, "epsilon"),
        ({"epsilon": "abc"}, "epsilon"),
        ({"epsilon": "0"}, "epsilon"),
        ({"epsilon": "-1"}, "epsilon"),
        ({"epsilon": "1e9"}, "epsilon"),
        ({"epsilon": "nan"}, "epsilon"),
        ({"epsilon": "inf"}, "epsilon"),
        ({"epsilon": "1", "hours": "0"}, "hours"),
        ({"epsilon": "1", "hours": "9999"}, "hours"),
        ({"epsilon": "1", "hours": "x"}, "hours"),
    ],
)
async def test_bad_export_requests_name_the_field(
    api: tuple[Kernel, httpx.AsyncClient], query: dict[str, str], param: str
) -> None:
    _, client = api
    r = await client.get("/v1/telemetry/export", params=query)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param


async def test_only_admins_and_viewers_may_export(api: tuple[Kernel, httpx.AsyncClient]) -> None:
    k, client = api
    user, _ = k.tokens.issue("bob", "user")
    viewer, _ = k.tokens.issue("vera", "viewer")
    url, params = "/v1/telemetry/export", {"epsilon": "1"}
    r = await client.get(url, params=params, headers={"Authorization": f"Bearer {user}"})
    assert r.status_code == 403 and r.json()["error"]["type"] == "permission_error"
    r = await client.get(url, params=params, headers={"Authorization": f"Bearer {viewer}"})
    assert r.status_code == 200 and r.json()["mechanism"] == "laplace"
    assert json.dumps(r.json()).count('"app"') == len(r.json()["data"])


# -- SDK and CLI -------------------------------------------------------------------------
def test_sdk_and_cli_export(server: LiveServer, client: Client) -> None:
    client.chat("hi", max_tokens=4)  # one request: telemetry for the implicit process
    out = client.telemetry_export(0.5, hours=2)
    assert out["epsilon"] == 0.5 and out["window"]["hours"] == 2
    assert {row["app"] for row in out["data"]} >= {IMPLICIT_APP}

    argv = ["--url", server.url, "--token", server.token]
    result = CliRunner().invoke(build_app(), ["telemetry", "export", "--epsilon", "2", *argv])
    assert result.exit_code == 0, result.output
    assert "epsilon 2.0 (laplace)" in result.stdout and IMPLICIT_APP in result.stdout
    result = CliRunner().invoke(
        build_app(), ["telemetry", "export", "--epsilon", "2", "--json", *argv]
    )
    assert json.loads(result.stdout)["mechanism"] == "laplace"
    result = CliRunner().invoke(build_app(), ["telemetry", "export", "--epsilon", "0", *argv])
    assert result.exit_code == 1 and result.stderr.startswith("error: epsilon must be")
    assert "Traceback" not in result.output
