"""`llmos ask`: the facts the kernel gathers (a known queue, a known slow process,
an alert), the figures the answer must carry, sys.ask on the mock device, and the
route, SDK and CLI with their bad inputs."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from typer.testing import CliRunner

from llmos.api import create_app
from llmos.cli.main import build_app
from llmos.devices import MockDevice
from llmos.errors import Forbidden, InvalidRequest, NotFound
from llmos.kernel import Caller, Kernel
from llmos.kernel.ask import quoted, tidy, with_figures
from llmos.kernel.facts import Figure, gather
from llmos.params import Settings
from llmos.sdk import ApiError, Client
from tests._live_server import LiveServer, serving
from tests.conftest import MockKernel

MSGS = [{"role": "user", "content": "hello"}]


async def make(home: Path, **settings: Any) -> tuple[Kernel, MockDevice, Caller]:
    device = MockDevice(slots=1, token_delay=0.01)
    kernel = Kernel(
        Settings(home=home, admin_token="adm", sample_interval_s=3600, **settings), [device]
    )
    await kernel.start()
    return kernel, device, kernel.authenticate("adm")


def telemetry(kernel: Kernel, pid: int, total_s: float, wait_s: float, n: int = 4) -> None:
    """`n` finished requests of `pid` with known latencies, ten seconds ago."""
    for i in range(n):
        kernel.store.add_telemetry(
            {
                "request_id": f"known-{pid}-{i}", "owner": "admin", "pid": pid,
                "model": "mock", "device": "mock0", "kind": "chat", "priority": 20,
                "prompt_tokens": 10, "output_tokens": 20, "cached_tokens": 0,
                "max_tokens": 20, "queue_wait_s": wait_s, "ttft_s": wait_s + 0.1,
                "total_s": total_s, "finish_reason": "stop", "created_at": time.time() - 10,
            }
        )  # fmt: skip


async def test_facts_carry_the_queue_the_slow_process_and_the_alerts(tmp_path: Path) -> None:
    kernel, _, admin = await make(tmp_path)
    crawler = await kernel.call("proc.spawn", admin, {"name": "crawler"})
    chat = await kernel.call("proc.spawn", admin, {"name": "chat"})
    telemetry(kernel, crawler["pid"], total_s=12.3, wait_s=9.1)
    telemetry(kernel, chat["pid"], total_s=0.5, wait_s=0.05)
    kernel.anomalies.alerts.add(crawler["pid"], "admin", "loop", "process 2 loops", 9, 8, "alert")
    for _ in range(4):  # one running on the only slot, three waiting
        await kernel.call("llm.chat", admin, {"model": "mock", "messages": MSGS,
                                              "max_tokens": 500})  # fmt: skip
    kernel.sysmon.sample()

    facts = gather(kernel, admin)
    d = facts.data
    assert (d["waiting"], d["running"], d["slots"], d["requests"]) == (3, 1, 1, 8)
    assert d["e2e_p95_s"] == pytest.approx(12.3) and d["e2e_p50_s"] == pytest.approx(6.4)
    assert d["slowest"][0] == {
        "pid": crawler["pid"], "name": "crawler", "owner": "admin", "requests": 4,
        "mean_total_s": 12.3, "mean_queue_wait_s": 9.1,
    }  # fmt: skip
    assert [x["name"] for x in d["longest_waits"]] == ["crawler", "chat"]
    assert len(d["alerts"]) == 1 and d["policy"] == "fifo"
    text = "\n".join(facts.sentences)
    assert "Queue: 3 requests waiting now" in text and "1 running on 1 slots" in text
    assert "end-to-end p50 6.40 s, p95 12.30 s" in text
    assert (
        f"pid {crawler['pid']} 'crawler' 12.30 s over 4 requests (mean queue wait 9.10 s)" in text
    )
    assert "1 active anomaly alerts. Alert 1 (loop): process 2 loops." in text
    assert "Device mock0 (model mock): circuit closed, 1 of 1 slots busy" in text
    assert {f.label: f.value for f in facts.key} == {
        "waiting": 3, "throughput": pytest.approx(d["tokens_per_s"], abs=0.05),
        "p95 latency": 12.3, "slowest process": 12.3, "alerts": 1,
    }  # fmt: skip

    await kernel.call("user.add", admin, {"name": "bob", "role": "user"})
    bob = kernel.authenticate((await kernel.call("token.create", admin, {"user": "bob"}))["token"])
    theirs = gather(kernel, bob)  # the system's figures, but not admin's processes
    assert theirs.data["waiting"] == 3 and theirs.data["slowest"] == []
    assert theirs.data["alerts"] == [] and "crawler" not in "\n".join(theirs.sentences)
    await kernel.stop()


def test_figures_the_model_left_out_are_appended() -> None:
    key = [Figure("waiting", 3, "3 requests waiting"), Figure("p95", 12.3, "12.30 s (p95)")]
    assert quoted("about 12.3 seconds", key[1]) and quoted("p95 is 12.30 s", key[1])
    assert not quoted("13 s", key[1]) and not quoted("no numbers", key[0])
    both = "3 requests wait; p95 is 12.3 s."
    assert with_figures(both, key) == both
    assert with_figures(" The queue is long. ", key) == (
        "The queue is long.\nFigures: 3 requests waiting; 12.30 s (p95)."
    )
    assert with_figures("3 are waiting.", key) == "3 are waiting.\nFigures: 12.30 s (p95)."
    assert with_figures("", key) == "Figures: 3 requests waiting; 12.30 s (p95)."


def test_a_small_model_s_repetitions_are_tidied() -> None:
    looped = "The queue is long. It has 6 requests. The queue is long. the queue is long. The q"
    assert tidy(looped) == "The queue is long. It has 6 requests."
    assert tidy("  pid 7 takes 8.67 s per request  ") == "pid 7 takes 8.67 s per request"
    assert tidy("") == ""


async def test_ask_goes_the_normal_way_and_keeps_the_figures(tmp_path: Path) -> None:
    kernel, device, admin = await make(tmp_path)
    device.token_delay = 0.0
    reply = await kernel.call(
        "sys.ask", admin, {"question": "  why is it slow? ", "max_tokens": 30}
    )
    assert reply["question"] == "why is it slow?" and reply["model"] == "mock"
    assert reply["error"] is None and len(reply["model_text"]) == 30  # mock: 1 token = 1 char
    assert reply["answer"].startswith(reply["model_text"].strip())
    assert "\nFigures: 0 requests waiting; " in reply["answer"]  # the mock quotes no numbers
    assert reply["facts"][0].startswith("Queue: 0 requests waiting now")
    assert reply["usage"]["completion_tokens"] == 30
    assert reply["usage"]["total_tokens"] == reply["usage"]["prompt_tokens"] + 30
    proc = kernel.procs.get(reply["pid"])  # accounted to the caller's (implicit) process
    assert proc.owner == "admin" and proc.tokens_out == 30 and proc.requests == 1
    prompt = "".join(chr(i) for i in device.started_prompts[-1])
    assert "<system>You explain an LLM server's state" in prompt
    assert "<assistant>It is slow because 5 requests are waiting" in prompt  # the example
    assert "- Queue: 0 requests waiting now" in prompt and "Question: why is it slow?" in prompt
    await kernel.stop()


async def test_a_failing_model_still_gets_the_figures(tmp_path: Path) -> None:
    kernel, device, admin = await make(tmp_path, device_retries=0)
    device.fail(times=1)
    reply = await kernel.call("sys.ask", admin, {"question": "why is it slow?"})
    assert reply["error"].startswith("device mock0") and reply["model_text"] == ""
    assert reply["answer"].startswith("(The model could not answer: device mock0")
    assert "\nFigures: 0 requests waiting; " in reply["answer"] and reply["facts"]
    device.context_length = 64  # not even the key figures fit
    tight = await kernel.call("sys.ask", admin, {"question": "why is it slow?"})
    assert "context" in tight["error"] and tight["answer"].count("Figures: ") == 1
    await kernel.stop()


async def test_bad_questions_are_refused(tmp_path: Path) -> None:
    kernel, _, admin = await make(tmp_path)
    for args, field in (
        ({}, "question"),
        ({"question": ""}, "question"),
        ({"question": "   "}, "question"),
        ({"question": 42}, "question"),
        ({"question": "x" * 2001}, "question"),
        ({"question": "why?", "max_tokens": 201}, "max_tokens"),
        ({"question": "why?", "max_tokens": 0}, "max_tokens"),
        ({"question": "why?", "max_tokens": True}, "max_tokens"),
    ):
        with pytest.raises(InvalidRequest) as bad:
            await kernel.call("sys.ask", admin, args)
        assert bad.value.param == field, args
    with pytest.raises(NotFound) as missing:
        await kernel.call("sys.ask", admin, {"question": "why?", "model": "nope"})
    assert missing.value.param == "model"
    await kernel.call("user.add", admin, {"name": "vic", "role": "viewer"})
    vic = kernel.authenticate((await kernel.call("token.create", admin, {"user": "vic"}))["token"])
    with pytest.raises(Forbidden):  # it spends tokens: not a viewer's
        await kernel.call("sys.ask", vic, {"question": "why?"})
    assert kernel.procs.list() == []  # nothing was accounted for any of these
    await kernel.stop()


async def test_the_ask_route(mock: MockKernel) -> None:
    c = mock.client
    for body, field in (
        ({}, "question"),
        ({"question": ""}, "question"),
        ({"question": "x" * 2001}, "question"),
        ({"question": "   "}, "question"),
        ({"question": "why?", "max_tokens": 500}, "max_tokens"),
        ({"question": "why?", "temperature": 1}, "temperature"),
    ):
        r = await c.post("/v1/ask", json=body)
        assert r.status_code == 400, (body, r.text)
        assert r.json()["error"]["param"] == field, body
    body = {"question": "why is it slow?", "max_tokens": 8}
    mock.device.context_length = 700  # too small for every fact: the key figures only
    small = (await c.post("/v1/ask", json=body)).json()
    assert small["error"] is None and small["usage"]["completion_tokens"] == 8
    assert small["usage"]["prompt_tokens"] < 700 and len(small["facts"]) > 3
    mock.device.context_length = 4096
    ok = await c.post("/v1/ask", json=body)
    assert ok.status_code == 200, ok.text
    reply = ok.json()
    assert {"question", "answer", "facts", "data", "model", "usage"} <= set(reply)
    assert reply["usage"]["prompt_tokens"] > 700 and "Figures:" in reply["answer"]


# -- SDK and command line -------------------------------------------------------------
@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    home = tmp_path_factory.mktemp("ask-cli")
    kernel = Kernel(Settings(home=home, admin_token="adm"), [MockDevice(slots=2)])
    with serving(create_app(kernel)) as url:
        yield LiveServer(url, "adm", kernel)


def run(server: LiveServer, *args: str) -> Result:
    argv = [*args, "--url", server.url, "--token", server.token]
    return CliRunner().invoke(build_app(), argv)


def test_the_ask_command(server: LiveServer) -> None:
    result = run(server, "ask", "why is it slow?", "--max-tokens", "10")
    assert result.exit_code == 0, result.output
    answer, _, facts = result.stdout.partition("\nFacts:\n")
    assert "Figures: 0 requests waiting" in answer
    assert facts.startswith("  Queue: ") and "  Scheduling policy: fifo." in facts

    whole = json.loads(run(server, "ask", "why?", "--max-tokens", "5", "--json").stdout)
    assert whole["usage"]["completion_tokens"] == 5 and whole["facts"]

    empty = run(server, "ask", "")
    assert empty.exit_code == 1 and "Traceback" not in empty.output
    assert empty.stderr.startswith("error: ") and "question" in empty.stderr
    assert run(server, "ask", "why?", "--max-tokens", "999").exit_code == 2


def test_the_sdk_asks(server: LiveServer) -> None:
    with Client(server.url, server.token) as client:
        reply = client.ask("is anything wrong?", max_tokens=4)
        assert reply["question"] == "is anything wrong?" and reply["model"] == "mock"
        with pytest.raises(ApiError) as bad:
            client.ask("x" * 2001)
        assert bad.value.status == 400 and bad.value.param == "question"
