"""Agents against the real embedded model (SmolLM2-135M): `llmos run` runs the
example ReAct agent, which calls the kernel's tools, `llmos ps` shows it, and
`llmos kill` ends a long-running agent's OS process and its in-flight request."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
from click.testing import Result
from typer.testing import CliRunner

from llmos.api import create_app
from llmos.cli.main import build_app
from llmos.devices import LlamaCppDevice, default_model_path
from llmos.kernel import Kernel
from llmos.params import Settings
from llmos.sdk import Client
from tests._live_server import LiveServer, serving

MODEL = "SmolLM2-135M-Instruct"
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
TOOLS = ("calculator", "time", "memory_search", "file_list", "file_read")
LOOPER = """\
from llmos.sdk import Client
with Client() as llm:
    while True:
        llm.chat("Count from one to a thousand.", max_tokens=400, ignore_eos=True, temperature=0)
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    home = tmp_path_factory.mktemp("agents-real")
    device = LlamaCppDevice(default_model_path(), slots=2, ctx=2048, threads=2, model=MODEL)
    kernel = Kernel(Settings(home=home, admin_token="real-admin", slots=2, ctx=2048), [device])
    with serving(create_app(kernel)) as url:
        kernel.agents.url = url
        yield LiveServer(url, "real-admin", kernel)


@pytest.fixture
def client(server: LiveServer) -> Iterator[Client]:
    with Client(server.url, server.token) as c:
        yield c
        for p in c.processes():  # end every program the test left running
            if p["os_pid"] is not None and p["state"] not in ("exited", "killed"):
                c.kill(p["pid"])


def cli(server: LiveServer, *args: str) -> Result:
    argv = [*args, "--url", server.url, "--token", server.token]
    return CliRunner().invoke(build_app(), argv, env={"COLUMNS": "160"})


def until(check: Callable[[], bool], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def test_llmos_run_runs_the_react_agent_with_tools(server: LiveServer, client: Client) -> None:
    started = cli(server, "run", str(EXAMPLES / "react_agent.py"), "--budget", "20000")
    assert started.exit_code == 0, started.output
    pid = int(started.stdout.strip())
    ps = cli(server, "ps")
    row = next(line for line in ps.stdout.splitlines() if line.split()[:1] == [str(pid)])
    assert "react_agent" in row and "admin" in row

    waited = cli(server, "wait", str(pid))
    trace = client.logs(pid)["text"]
    assert waited.exit_code == 0, (waited.output, trace, client.logs(pid, "stderr")["text"])
    assert trace.startswith("Task: What is 17 * 23 + 4?\n")
    first = re.search(r"^Action 1: (\w+)\[(.+)\]$", trace, re.MULTILINE)
    assert first is not None and first.group(1) in TOOLS, trace
    assert "\nObservation 1: " in trace  # the tool answered through tool.call
    assert re.search(r"^Final answer: .+$", trace, re.MULTILINE), trace
    done = client.process(pid)
    assert done["state"] == "exited" and done["exit_code"] == 0
    assert done["requests"] >= 2 and done["tokens_out"] > 0 and done["cpu_s"] > 0
    shown = cli(server, "ps", "--all").stdout
    assert any(line.split()[:1] == [str(pid)] and "exited" in line for line in shown.splitlines())


def test_llmos_kill_ends_a_running_agent_and_its_request(
    server: LiveServer, client: Client, tmp_path: Path
) -> None:
    looper = tmp_path / "looper.py"
    looper.write_text(LOOPER)
    proc = client.run_agent(looper)
    pid, os_pid = proc["pid"], proc["os_pid"]
    until(lambda: client.process(pid)["running"] == 1)  # decoding a 400-token answer
    assert "running" in cli(server, "ps").stdout

    killed = cli(server, "kill", str(pid))
    assert killed.exit_code == 0 and f"killed {pid}" in killed.stdout
    until(lambda: not psutil.pid_exists(os_pid) or _zombie(os_pid), timeout=10)
    done = client.wait(pid, 30)
    assert done["state"] == "killed" and done["exit_code"] == -9
    after = client.process(pid)
    assert after["running"] == after["waiting"] == 0
    assert not server.kernel.live.get(pid)  # its request ended with it
    until(lambda: server.kernel.scheduler.num_running() == 0, timeout=30)
    reply = client.chat("Say hi.", max_tokens=4, temperature=0)  # the slots are free again
    assert reply.finish_reason in ("stop", "length")


def _zombie(os_pid: int) -> bool:
    try:
        return psutil.Process(os_pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
