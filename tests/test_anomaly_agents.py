"""The runaway-agent test (issue 8, acceptance 4): real agent programs (proc.exec)
against a live kernel on the mock device, sampled every 0.1 s. Among four normal
agents with varied prompts and think time, one that sends the same prompt as fast
as it can is flagged and throttled within a bounded number of samples, keeps
working at the throttled rate, and is restored when the alert is cleared; the
normal agents alone raise no alert.

Bounds are in samples (the detector's clock), not seconds. The token-rate window
is set to 20 samples (2 s): the default, 5 samples of 2 s, spans 10 s."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from llmos.api import create_app
from llmos.devices import MockDevice
from llmos.kernel import Kernel
from llmos.kernel.detector import AnomalyConfig
from llmos.params import Settings
from llmos.sdk import Client
from tests._live_server import LiveServer, serving

NORMAL = """\
import random, sys, time
from llmos.sdk import Client
rng = random.Random(int(sys.argv[1]))
words = "alpha beta gamma delta epsilon zeta theta kappa lambda sigma omega".split()
with Client() as llm:
    for i in range(100000):
        topic = " ".join(rng.choice(words) for _ in range(6))
        llm.chat(f"Task {i}: summarise {topic}.", model="mock", max_tokens=rng.randint(10, 30))
        time.sleep(rng.uniform(0.3, 0.6))
"""
RUNAWAY = """\
from llmos.sdk import Client
with Client() as llm:
    while True:
        llm.chat("Are we done yet? Check again.", model="mock", max_tokens=50)
"""
ALERT_WITHIN = 100  # samples from the runaway's first reply to its alert (nominally ~15)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    home = tmp_path_factory.mktemp("anomaly-home")
    settings = Settings(home=home, admin_token="adm", sample_interval_s=0.1)
    kernel = Kernel(settings, [MockDevice(slots=4, token_delay=0.002)])
    kernel.anomalies.configure(AnomalyConfig(rate_samples=20))
    with serving(create_app(kernel)) as url:
        kernel.agents.url = url
        yield LiveServer(url, "adm", kernel)


@pytest.fixture
def client(server: LiveServer) -> Iterator[Client]:
    with Client(server.url, server.token) as c:
        yield c
        for p in c.processes():  # end every program this test started
            if p["os_pid"] is not None and p["state"] not in ("exited", "killed"):
                c.kill(p["pid"])
        for p in c.processes():
            if p["os_pid"] is not None:
                c.wait(p["pid"], 30)


def until(check: Callable[[], Any], timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := check()):
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)
    return result


def start_normal(client: Client, tmp_path: Path, n: int = 4) -> list[int]:
    path = tmp_path / "normal.py"
    path.write_text(NORMAL)
    pids = [client.run_agent(path, str(seed), name=f"normal-{seed}")["pid"] for seed in range(n)]
    until(lambda: all(client.process(pid)["tokens_out"] > 0 for pid in pids))
    return pids


def test_a_runaway_agent_is_flagged_and_throttled(
    server: LiveServer, client: Client, tmp_path: Path
) -> None:
    watch = server.kernel.anomalies
    normal = start_normal(client, tmp_path)
    runaway_path = tmp_path / "runaway.py"
    runaway_path.write_text(RUNAWAY)
    pid = client.run_agent(runaway_path, name="runaway")["pid"]
    first = until(lambda: client.process(pid)["tokens_out"] > 0 and watch.samples)

    alerts = until(lambda: [a for a in client.alerts(active_only=True) if a["pid"] == pid])
    flagged_after = watch.samples - first
    assert flagged_after <= ALERT_WITHIN
    assert {a["kind"] for a in alerts} <= {"loop", "token_rate"}
    assert all(a["action"] == "throttle" and a["owner"] == "admin" for a in alerts)
    assert all(f"process {pid} (runaway" in a["message"] for a in alerts)
    proc = client.process(pid)
    assert (proc["priority"], proc["max_concurrent"]) == (0, 1)
    assert any(a["pid"] == pid for a in client.top()["alerts"])

    # It keeps working, at most at its cap: the median rate of the others, below the
    # rate it was flagged at. Finished requests' tokens only: one in flight at the
    # start is counted whole, and the parking acts once a sample (the overshoot).
    cap = watch.throttles.by_pid[pid].cap_tps
    assert all(cap < a["value"] for a in alerts if a["kind"] == "token_rate")
    start, t1 = client.process(pid)["tokens_out"], time.monotonic()
    until(lambda: watch.samples >= first + flagged_after + 50)
    post_tokens, elapsed = client.process(pid)["tokens_out"] - start, time.monotonic() - t1
    burst = watch.config.throttle_burst_s * cap
    assert 0 < post_tokens <= cap * elapsed + burst + 50 + 100
    assert client.process(pid)["state"] in ("running", "waiting", "ready")  # not killed

    # Cleared, the throttle is lifted. Suspended first, so that it cannot offend
    # again meanwhile; a few samples let a rule that was about to fire do so.
    client.suspend(pid)
    settled = watch.samples
    until(lambda: watch.samples >= settled + 5)
    for alert in client.alerts(active_only=True):
        if alert["pid"] == pid:
            assert client.clear_alert(alert["id"])["cleared_at"] is not None
    proc = client.process(pid)
    assert (proc["priority"], proc["max_concurrent"]) == (20, None)
    assert pid not in watch.throttles.by_pid
    assert not any(a["pid"] in normal for a in client.alerts())  # the normal ones: silent


def test_normal_load_raises_no_alert(server: LiveServer, client: Client, tmp_path: Path) -> None:
    watch = server.kernel.anomalies
    for alert in client.alerts(active_only=True):  # a clean slate
        client.clear_alert(alert["id"])
    before = {a["id"] for a in client.alerts()}
    start_normal(client, tmp_path)
    begin = watch.samples
    until(lambda: watch.samples >= begin + 80)  # longer than the runaway took to be flagged
    assert [a for a in client.alerts() if a["id"] not in before] == []
    procs = [p for p in client.processes() if p["name"].startswith("normal")]
    assert all(p["priority"] == 20 for p in procs if p["state"] not in ("exited", "killed"))
