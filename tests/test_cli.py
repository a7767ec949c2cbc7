"""The `llmos` command line, through typer's CliRunner, against a live kernel on the
mock device."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import Result
from typer.testing import CliRunner

import llmos.api.server
from llmos.cli.main import build_app
from llmos.params import DEFAULT_QUANTUM, POLICY_NAMES, Settings
from llmos.sdk import Client
from tests._live_server import MODEL, LiveServer, closed_port_url


def run(*args: str) -> Result:
    return CliRunner().invoke(build_app(), list(args))


def against(server: LiveServer, *args: str) -> Result:
    return run(*args, "--url", server.url, "--token", server.token)


def assert_clean_failure(result: Result, code: int) -> None:
    assert result.exit_code == code, result.output
    assert isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output


# -- chat --------------------------------------------------------------------------
def test_chat_streams_the_reply(server: LiveServer, client: Client) -> None:
    result = against(server, "chat", "hello", "--max-tokens", "6")
    assert result.exit_code == 0, result.output
    assert result.stdout == client.chat("hello", max_tokens=6).text + "\n"


def test_chat_without_streaming_and_with_a_system_message(
    server: LiveServer, client: Client
) -> None:
    args = ("chat", "hello", "--system", "be brief", "--max-tokens", "4", "--no-stream")
    result = against(server, *args, "--model", MODEL, "--temperature", "0")
    assert result.exit_code == 0, result.output
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hello"},
    ]
    assert result.stdout == client.chat(messages, max_tokens=4).text + "\n"


def test_chat_api_error_is_one_line(server: LiveServer) -> None:
    result = against(server, "chat", "hello", "--model", "no-such-model")
    assert_clean_failure(result, 1)
    assert result.stderr.startswith("error: ")
    assert "no-such-model" in result.stderr


# -- processes ---------------------------------------------------------------------
def test_ps_lists_live_processes(server: LiveServer, client: Client) -> None:
    proc = client.spawn("cli-ps-agent", priority=9)
    result = against(server, "ps")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    row = next(line for line in lines if "cli-ps-agent" in line)
    assert row.split()[:5] == [str(proc["pid"]), "cli-ps-agent", "admin", "ready", "9"]
    assert row.split()[5:9] == ["0", "0", "0", "0"]  # REQS, TOK IN, TOK OUT, PREEMPT
    header = lines[0]
    assert header.split()[0] == "PID" and "TOK OUT" in header
    assert header.split()[-2:] == ["PREEMPT", "AGE"]
    assert max(len(line) for line in lines) <= 100


def test_spawn_prints_pid_and_token(server: LiveServer, client: Client) -> None:
    args = ("--priority", "5", "--max-concurrent", "2", "--token-budget", "100")
    result = against(server, "spawn", "cli-spawned", *args)
    assert result.exit_code == 0, result.output
    pid_line, token_line = result.stdout.splitlines()
    assert pid_line.startswith("pid=") and token_line.startswith("token=")
    pid, token = int(pid_line[4:]), token_line[6:]
    proc = client.process(pid)
    assert (proc["name"], proc["priority"]) == ("cli-spawned", 5)
    assert (proc["max_concurrent"], proc["token_budget"]) == (2, 100)
    with Client(server.url, token) as agent:  # the token is the new process's
        assert [p["pid"] for p in agent.processes()] == [pid]


def test_spawn_bad_priority(server: LiveServer) -> None:
    result = against(server, "spawn", "x", "--priority", "99")
    assert_clean_failure(result, 1)
    assert result.stderr.startswith("error: ") and "priority" in result.stderr


def test_kill_and_ps_all(server: LiveServer, client: Client) -> None:
    proc = client.spawn("cli-kill-agent")
    result = against(server, "kill", str(proc["pid"]))
    assert result.exit_code == 0, result.output
    assert result.stdout == f"killed {proc['pid']} (cli-kill-agent)\n"
    assert client.process(proc["pid"])["state"] == "killed"
    assert "cli-kill-agent" not in against(server, "ps").stdout
    shown = against(server, "ps", "--all").stdout
    assert "cli-kill-agent" in shown and "killed" in shown


def test_kill_unknown_pid(server: LiveServer) -> None:
    result = against(server, "kill", "987654")
    assert_clean_failure(result, 1)
    assert result.stderr == "error: no process with pid 987654\n"


# -- system ------------------------------------------------------------------------
def test_info(server: LiveServer) -> None:
    result = against(server, "info")
    assert result.exit_code == 0, result.output
    assert "policy" in result.stdout and "fifo" in result.stdout
    assert MODEL in result.stdout


def test_devices(server: LiveServer) -> None:
    result = against(server, "devices")
    assert result.exit_code == 0, result.output
    row = next(line for line in result.stdout.splitlines() if line.startswith("mock0"))
    assert row.split()[:7] == ["mock0", "mock", MODEL, "2", "4096", "yes", "closed"]


# -- scheduler ---------------------------------------------------------------------
def _sched_rows(result: Result) -> dict[str, str]:
    rows = {}
    for line in result.stdout.splitlines():
        key, _, value = line.partition("  ")
        rows[key.strip()] = value.strip()
    return rows


def test_sched_shows_the_state(server: LiveServer) -> None:
    result = against(server, "sched")
    assert result.exit_code == 0, result.output
    rows = _sched_rows(result)
    assert rows["policy"] == "fifo"
    assert rows["quantum"] == str(DEFAULT_QUANTUM)
    assert rows["preemptions"].isdigit() and rows["resumes"].isdigit()
    assert rows["waiting"] == "0"
    hit = rows["resume cache hit"]
    assert hit == "-" or hit.endswith("%")
    assert rows["decision time"] == "-" or rows["decision time"].endswith(" us")
    assert "weights" not in rows


def test_sched_switches_policy_and_knobs(server: LiveServer, client: Client) -> None:
    try:
        result = against(server, "sched", "rr", "--quantum", "8", "--aging-s", "3")
        assert result.exit_code == 0, result.output
        rows = _sched_rows(result)
        assert (rows["policy"], rows["quantum"]) == ("rr", "8")
        state = client.scheduler()
        assert (state["policy"], state["quantum"], state["aging_s"]) == ("rr", 8, 3.0)
        result = against(server, "sched", "--weight", "alice=2", "--weight", "bob=0.5")
        assert result.exit_code == 0, result.output
        rows = _sched_rows(result)
        assert rows["policy"] == "rr"  # knobs alone keep the policy
        assert rows["weights"] == "alice=2, bob=0.5"
        assert client.scheduler()["weights"] == {"alice": 2.0, "bob": 0.5}
    finally:
        client.set_scheduler("fifo", quantum=DEFAULT_QUANTUM, weights={})
    assert _sched_rows(against(server, "sched"))["policy"] == "fifo"


def test_sched_unknown_policy(server: LiveServer, client: Client) -> None:
    result = against(server, "sched", "bogus")
    assert_clean_failure(result, 1)
    assert result.stderr.startswith("error: unknown policy 'bogus'")
    assert result.stdout == ""
    assert client.scheduler()["policy"] == "fifo"


def test_sched_bad_weight_is_a_usage_error(server: LiveServer) -> None:
    for bad in ("alice", "=2", "alice=lots"):
        result = against(server, "sched", "--weight", bad)
        assert_clean_failure(result, 2)
        assert result.stderr == f"error: --weight takes OWNER=WEIGHT, got {bad!r}\n"


def test_sched_switch_needs_an_admin(server: LiveServer, client: Client) -> None:
    proc = client.spawn("cli-not-root")
    result = run("sched", "rr", "--url", server.url, "--token", proc["token"])
    assert_clean_failure(result, 1)
    assert result.stderr.startswith("error: ")
    assert client.scheduler()["policy"] == "fifo"


# -- failures ----------------------------------------------------------------------
def test_bad_token(server: LiveServer) -> None:
    result = run("ps", "--url", server.url, "--token", "wrong")
    assert_clean_failure(result, 1)
    assert result.stderr == "error: invalid bearer token\n"


def test_unreachable_kernel() -> None:
    url = closed_port_url()
    result = run("info", "--url", url, "--token", "t")
    assert_clean_failure(result, 1)
    assert result.stderr.startswith(f"error: cannot reach the llmos kernel at {url}")
    assert "llmos up" in result.stderr


def test_no_arguments_prints_help() -> None:
    result = run()
    assert_clean_failure(result, 2)
    assert "Usage" in result.output
    for command in ("up", "chat", "ps", "spawn", "kill", "info", "devices", "sched"):
        assert command in result.output


def test_unknown_command() -> None:
    result = run("frobnicate")
    assert_clean_failure(result, 2)
    assert "No such command" in result.output


def test_unknown_option() -> None:
    result = run("ps", "--frobnicate")
    assert_clean_failure(result, 2)
    assert "No such option" in result.output


# -- up ----------------------------------------------------------------------------
def test_up_rejects_bad_settings_before_serving(monkeypatch: pytest.MonkeyPatch) -> None:
    served: list[Settings] = []
    monkeypatch.setattr(llmos.api.server, "serve", served.append)
    result = run("up", "--slots", "0")
    assert_clean_failure(result, 2)
    assert result.stderr == "error: slots must be between 1 and 256\n"
    result = run("up", "--model", "/nonexistent.gguf")
    assert_clean_failure(result, 2)
    assert "model file not found" in result.stderr
    result = run("up", "--policy", "bogus")
    assert_clean_failure(result, 2)
    assert result.stderr.startswith("error: unknown policy 'bogus'")
    result = run("up", "--max-queue", "10", "--max-queue-per-owner", "20")
    assert_clean_failure(result, 2)
    assert "max_queue_per_owner" in result.stderr
    result = run("up", "--quantum", "0")
    assert_clean_failure(result, 2)
    assert "quantum" in result.stderr
    result = run("up", "--slots", "many")
    assert_clean_failure(result, 2)
    assert "--slots" in result.output
    assert served == []


def test_up_builds_settings_and_serves(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    served: list[Settings] = []
    monkeypatch.setattr(llmos.api.server, "serve", served.append)
    args = ["--port", "0", "--device-url", "http://127.0.0.1:9/v1", "--model-name", "m"]
    result = run("up", "--home", str(tmp_path), "--slots", "3", "--ctx", "512", *args)
    assert result.exit_code == 0, result.output
    (settings,) = served
    assert settings.home == tmp_path
    assert (settings.port, settings.slots, settings.ctx) == (0, 3, 512)
    assert (settings.device_url, settings.model_name) == ("http://127.0.0.1:9/v1", "m")
    assert settings.model_path is None
    assert settings.threads >= 1
    assert (settings.policy, settings.quantum) == ("fifo", DEFAULT_QUANTUM)


def test_up_scheduling_options(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    served: list[Settings] = []
    monkeypatch.setattr(llmos.api.server, "serve", served.append)
    args = ["--policy", "rr", "--quantum", "8", "--max-queue", "64", "--max-queue-per-owner", "16"]
    result = run("up", "--home", str(tmp_path), "--device-url", "http://127.0.0.1:9/v1", *args)
    assert result.exit_code == 0, result.output
    (settings,) = served
    assert (settings.policy, settings.quantum) == ("rr", 8)
    assert (settings.max_queue, settings.max_queue_per_owner) == (64, 16)


def test_up_help_lists_the_policies() -> None:
    result = run("up", "--help")
    assert result.exit_code == 0, result.output
    for name in POLICY_NAMES:
        assert name in result.output
    assert "--quantum" in result.output and "--max-queue-per-owner" in result.output
