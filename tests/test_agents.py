"""Agents: programs the kernel runs as OS processes (proc.exec, `llmos run`),
against a live kernel on the mock device. Each test writes a small agent into
tmp_path; every program a test starts is ended (the fixture kills what is left)."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
from click.testing import Result
from typer.testing import CliRunner

import llmos.api.server
import llmos.kernel.agents
from llmos.cli.main import build_app
from llmos.kernel.store import Store
from llmos.params import Settings
from llmos.sdk import ApiError, Client
from tests._live_server import LiveServer, live_server

ALLOWED_ENV = {
    "PATH", "LANG", "HOME", "TMPDIR", "PYTHONUNBUFFERED", "PYTHONPATH", "LLMOS_URL",
    "LLMOS_TOKEN", "LLMOS_PID", "OPENAI_BASE_URL", "OPENAI_API_KEY",
}  # fmt: skip
# What Python itself may add to os.environ at start (e.g. a locale coercion).
PYTHON_ADDED = {"LC_CTYPE"}
SLEEPER = "import time\nprint('ready', flush=True)\ntime.sleep(60)\n"
CHATTER = """\
import sys
from llmos.sdk import Client
with Client() as llm:
    for i in range(int(sys.argv[1])):
        llm.chat("go", model="mock", max_tokens=int(sys.argv[2]))
        print("round", i, flush=True)
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(tmp_path_factory.mktemp("agents-home"), token_delay=0.01) as live:
        live.kernel.agents.url = live.url  # where its agents reach it
        yield live


@pytest.fixture
def client(server: LiveServer) -> Iterator[Client]:
    with Client(server.url, server.token) as c:
        yield c
        for p in c.processes():  # end every program this test left running
            if p["os_pid"] is not None and p["state"] not in ("exited", "killed"):
                c.kill(p["pid"])
        for p in c.processes():
            if p["os_pid"] is not None:
                c.wait(p["pid"], 30)


def agent(tmp_path: Path, source: str, name: str = "agent.py") -> Path:
    path = tmp_path / name
    path.write_text(source)
    return path


def until(check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def gone(os_pid: int) -> bool:
    try:
        return psutil.Process(os_pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


# -- running one -------------------------------------------------------------------------
def test_an_agent_runs_with_a_clean_environment_and_its_own_token(
    server: LiveServer, client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLMOS_KEY", "secret-master-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret-cloud-key")
    source = """\
import json, os, sys
from llmos.sdk import Client
with Client() as llm:
    me = llm.whoami()
    reply = llm.chat("hi", model="mock", max_tokens=5)
print(json.dumps({"argv": sys.argv[1:], "me": me, "cwd": os.getcwd(),
                  "env": dict(os.environ), "text": reply.text}))
print("a warning", file=sys.stderr)
sys.exit(3)
"""
    path = agent(tmp_path, source)
    proc = client.run_agent(path, "one", "two words", name="env-check", env={"MODE": "test"})
    assert proc["name"] == "env-check" and proc["os_pid"] > 0 and proc["state"] != "exited"
    assert proc["command"] == f"{path} one 'two words'"
    done = client.wait(proc["pid"], 30)
    assert done["state"] == "exited" and done["exit_code"] == 3
    assert done["requests"] == 1 and done["tokens_out"] == 5 and done["tokens_in"] > 0
    assert done["cpu_s"] > 0 and done["wall_s"] >= done["cpu_s"] / 4

    seen = json.loads(client.logs(proc["pid"])["text"])
    assert seen["argv"] == ["one", "two words"] and len(seen["text"]) == 5
    assert seen["me"]["role"] == "process" and seen["me"]["pid"] == proc["pid"]
    env = seen["env"]
    assert set(env) <= ALLOWED_ENV | PYTHON_ADDED | {"MODE"} and env["MODE"] == "test"
    assert env["LLMOS_URL"] == server.url and env["LLMOS_PID"] == str(proc["pid"])
    assert env["LLMOS_TOKEN"] != server.token and env["OPENAI_API_KEY"] == env["LLMOS_TOKEN"]
    assert "secret" not in json.dumps(env)
    work = server.kernel.settings.home / "agents" / str(proc["pid"]) / "work"
    assert seen["cwd"] == env["HOME"] == str(work)
    assert client.logs(proc["pid"], "stderr")["text"] == "a warning\n"
    with Client(server.url, env["LLMOS_TOKEN"]) as dead, pytest.raises(ApiError) as err:
        dead.whoami()  # its token ended with it
    assert err.value.status == 401


def test_the_hello_example_runs(client: Client) -> None:
    example = Path(__file__).resolve().parent.parent / "examples" / "hello_agent.py"
    proc = client.run_agent(example, "Ada")
    assert client.wait(proc["pid"], 30)["exit_code"] == 0
    first = client.logs(proc["pid"])["text"].splitlines()[0]
    assert first == f"hello, Ada: I am process {proc['pid']} (hello_agent)"


def test_cpu_time_is_limited(client: Client, tmp_path: Path) -> None:
    proc = client.run_agent(agent(tmp_path, "while True:\n    pass\n"), cpu_s=1)
    done = client.wait(proc["pid"], 60)
    assert done["exit_code"] in (-signal.SIGXCPU, -signal.SIGKILL)
    assert done["state"] == "exited" and 0.9 <= done["cpu_s"] < 5


def test_memory_is_limited(client: Client, tmp_path: Path) -> None:
    hog = "data = bytearray(1 << 30)\nprint('allocated')\n"
    proc = client.run_agent(agent(tmp_path, hog), mem_mb=128)
    done = client.wait(proc["pid"], 30)
    assert done["exit_code"] == 1
    assert "MemoryError" in client.logs(proc["pid"], "stderr")["text"]
    assert client.logs(proc["pid"])["text"] == ""


def test_output_is_followed_as_it_comes_and_tailed(client: Client, tmp_path: Path) -> None:
    source = "import time\nfor i in range(15):\n    print('line', i)\n    time.sleep(0.03)\n"
    proc = client.run_agent(agent(tmp_path, source))
    text = "".join(client.follow(proc["pid"], poll_s=0.05))
    assert text == "".join(f"line {i}\n" for i in range(15))
    assert client.logs(proc["pid"], tail=2)["text"] == "line 13\nline 14\n"
    chunk = client.logs(proc["pid"], offset=len("line 0\n"), max_bytes=7)
    assert chunk["text"] == "line 1\n" and chunk["next_offset"] == 14
    assert chunk["running"] is False and chunk["dropped"] == 0


# -- waiting, signals ---------------------------------------------------------------------
def test_wait_times_out_and_kill_ends_the_os_process(client: Client, tmp_path: Path) -> None:
    proc = client.run_agent(agent(tmp_path, SLEEPER))
    until(lambda: client.logs(proc["pid"])["text"] == "ready\n")
    started = time.monotonic()
    with pytest.raises(ApiError) as err:
        client.wait(proc["pid"], timeout=0.3)
    assert err.value.status == 408 and err.value.code == "still_running"
    assert time.monotonic() - started < 10
    assert client.kill(proc["pid"])["state"] == "killed"
    until(lambda: gone(proc["os_pid"]))
    done = client.wait(proc["pid"], 30)
    assert done["state"] == "killed" and done["exit_code"] == -signal.SIGKILL
    assert client.logs(proc["pid"])["text"] == "ready\n"  # output outlives the program


def test_suspend_stops_the_program_and_parks_its_requests(client: Client, tmp_path: Path) -> None:
    proc = client.run_agent(agent(tmp_path, CHATTER), "3", "100")  # 3 x 1 s of decoding
    pid = proc["pid"]
    until(lambda: client.process(pid)["running"] == 1)
    assert client.suspend(pid)["state"] == "suspended"
    assert psutil.Process(proc["os_pid"]).status() == psutil.STATUS_STOPPED
    until(lambda: client.process(pid)["running"] == 0)  # left its slot at a token boundary
    frozen = client.process(pid)
    time.sleep(0.5)
    now = client.process(pid)
    assert now["state"] == "suspended" and now["waiting"] == 1
    assert now["tokens_out"] == frozen["tokens_out"] < 300  # parked: nothing decoded
    assert client.resume(pid)["state"] in ("running", "waiting")
    assert psutil.Process(proc["os_pid"]).status() != psutil.STATUS_STOPPED
    done = client.wait(pid, 60)
    assert done["exit_code"] == 0 and done["tokens_out"] == 300 and done["preemptions"] >= 1
    assert client.logs(pid)["text"] == "round 0\nround 1\nround 2\n"


def test_term_lets_a_program_clean_up_and_kills_one_that_ignores_it(
    client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(llmos.kernel.agents, "AGENT_TERM_GRACE_S", 0.5)
    polite = """\
import signal, sys, time
def bye(*_):
    print("bye", flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, bye)
print("ready", flush=True)
time.sleep(60)
"""
    stubborn = polite.replace(
        "signal.signal(signal.SIGTERM, bye)", "signal.signal(signal.SIGTERM, signal.SIG_IGN)"
    )
    a = client.run_agent(agent(tmp_path, polite, "polite.py"))
    b = client.run_agent(agent(tmp_path, stubborn, "stubborn.py"))
    for pid in (a["pid"], b["pid"]):
        until(lambda pid=pid: client.logs(pid)["text"] == "ready\n")
    client.suspend(a["pid"])  # a stopped program still gets to clean up
    client.terminate(a["pid"])
    client.terminate(b["pid"])
    done_a, done_b = client.wait(a["pid"], 30), client.wait(b["pid"], 30)
    assert done_a["exit_code"] == 0 and done_a["state"] == "exited"
    assert client.logs(a["pid"])["text"] == "ready\nbye\n"
    assert done_b["exit_code"] == -signal.SIGKILL and done_b["state"] == "exited"


def test_kernel_stop_terminates_its_agents(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with live_server(home) as live:
        live.kernel.agents.url = live.url
        with Client(live.url, live.token) as c:
            proc = c.run_agent(agent(tmp_path, SLEEPER))
            until(lambda: c.logs(proc["pid"])["text"] == "ready\n")
    assert gone(proc["os_pid"])
    store = Store(home / "llmos.db")
    try:
        kept = {p.pid: p for p in store.load_processes()}[proc["pid"]]
    finally:
        store.close()
    assert kept.state.name == "KILLED" and kept.exit_code == -signal.SIGTERM


# -- the command line ---------------------------------------------------------------------
def cli(server: LiveServer, *args: str) -> Result:
    """`llmos ARGS` against the server (its options go before any `--`)."""
    head, sep, tail = list(args), [], []
    if "--" in head:
        i = head.index("--")
        head, sep, tail = head[:i], ["--"], head[i + 1 :]
    argv = [*head, "--url", server.url, "--token", server.token, *sep, *tail]
    return CliRunner().invoke(build_app(), argv, env={"COLUMNS": "160"})  # rows on one line


def test_llmos_run_follows_and_exits_with_the_agents_status(
    server: LiveServer, client: Client, tmp_path: Path
) -> None:
    path = agent(tmp_path, "import sys\nprint('args:', sys.argv[1:])\nsys.exit(4)\n")
    result = cli(server, "run", str(path), "--follow", "--name", "cli-agent", "--", "-x", "y")
    assert result.exit_code == 4, result.output
    assert "args: ['-x', 'y']" in result.stdout
    assert "exited: status 4" in result.stderr
    ps = cli(server, "ps", "--all")
    row = next(line for line in ps.stdout.splitlines() if "cli-agent" in line)
    assert "exited" in row


def test_llmos_run_logs_wait_suspend_resume(
    server: LiveServer, client: Client, tmp_path: Path
) -> None:
    started = cli(server, "run", str(agent(tmp_path, SLEEPER)), "--cpu", "30", "--mem", "256")
    assert started.exit_code == 0, started.output
    pid = int(started.stdout.strip())
    assert "llmos logs" in started.stderr
    until(lambda: cli(server, "logs", str(pid)).stdout == "ready\n")
    ps = cli(server, "ps")
    row = next(line for line in ps.stdout.splitlines() if line.split()[0] == str(pid))
    assert str(client.process(pid)["os_pid"]) in row.split()
    suspended = cli(server, "suspend", str(pid))
    assert suspended.exit_code == 0 and "suspended" in suspended.stdout
    assert "suspended" in cli(server, "ps").stdout
    assert "ready" in cli(server, "resume", str(pid)).stdout  # no requests: ready
    timed_out = cli(server, "wait", str(pid), "--timeout", "0.2")
    assert timed_out.exit_code == 124 and "still running" in timed_out.stderr
    assert cli(server, "kill", str(pid)).exit_code == 0
    waited = cli(server, "wait", str(pid))
    assert waited.exit_code == 128 + signal.SIGKILL and "was killed: SIGKILL" in waited.stderr


def test_llmos_run_and_wait_fail_cleanly(
    server: LiveServer, client: Client, tmp_path: Path
) -> None:
    missing = cli(server, "run", str(tmp_path / "missing.py"))
    assert missing.exit_code == 2 and "no such file" in missing.stderr
    unknown = cli(server, "wait", "99999")
    assert unknown.exit_code == 1 and unknown.stderr.startswith("error: ")
    assert "Traceback" not in unknown.output
    plain = client.spawn("plain")
    logs = cli(server, "logs", str(plain["pid"]))
    assert logs.exit_code == 1 and "runs no program" in logs.stderr


def test_llmos_up_user_agents_flag(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    served: list[Settings] = []
    monkeypatch.setattr(llmos.api.server, "serve", served.append)
    for flag, allowed in (([], False), (["--user-agents"], True)):
        result = CliRunner().invoke(
            build_app(), ["up", "--home", str(tmp_path), "--device", "mock", *flag]
        )
        assert result.exit_code == 0, result.output
        assert served.pop().user_agents is allowed
