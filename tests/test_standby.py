"""A warm standby follows a primary `llmos up` (a subprocess on the mock device);
after the primary is SIGKILLed, `llmos standby promote` makes it serve the
processes, memories and files committed before its last sync. Also the backup
CLI against a live kernel, and `llmos restore` from the command line."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from llmos.cli.main import build_app
from llmos.errors import Unavailable
from llmos.kernel import standby as sb
from llmos.sdk import Client
from tests._llama_server import free_port

TOKEN = "standby-test-admin"
KEY = base64.b64encode(bytes(range(1, 33))).decode()
LLMOS = [str(Path(sys.executable).parent / "llmos")]


def _env(home: Path) -> dict[str, str]:
    return {**os.environ, "LLMOS_KEY": KEY, "LLMOS_TOKEN": TOKEN, "LLMOS_HOME": str(home)}


def _wait(cond: Any, what: str, timeout: float = 60.0) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = cond()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url + "/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@contextlib.contextmanager
def started(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)


def _up(home: Path, port: int) -> list[str]:
    return [*LLMOS, "up", "--device", "mock", "--port", str(port), "--home", str(home)]


def test_standby_promoted_after_the_primary_is_killed(tmp_path: Path) -> None:
    p_home, s_home = tmp_path / "primary", tmp_path / "standby"
    p_port, s_port = free_port(), free_port()
    p_url, s_url = f"http://127.0.0.1:{p_port}", f"http://127.0.0.1:{s_port}"
    standby_args = [
        *LLMOS, "standby", "--primary", p_url, "--token", TOKEN, "--home", str(s_home),
        "--interval", "0.5", "--port", str(s_port), "--device", "mock",
    ]  # fmt: skip
    with (
        started(_up(p_home, p_port), _env(p_home), tmp_path / "primary.log") as primary,
        started(standby_args, _env(s_home), tmp_path / "standby.log") as standby,
    ):
        _wait(lambda: _healthy(p_url), "the primary")
        with Client(p_url, TOKEN) as c:
            pid = c.spawn("worker")["pid"]
            mem = c.mem_add("the launch code is 0000")
            c.fs_write("notes/plan.md", "step one\n")
            written_at = time.time()
        # the standby has a snapshot taken after those writes were committed
        _wait(
            lambda: sb.read_status(s_home).get("snapshot_at", 0) > written_at,
            "a sync after the writes",
        )
        assert not _healthy(s_url)  # a following standby serves nothing
        assert not (s_home / "llmos.db").exists()
        primary.send_signal(signal.SIGKILL)
        primary.wait(10)
        killed_at = time.time()
        status = sb.read_status(s_home)
        rpo = killed_at - status["snapshot_at"]
        assert rpo < 30
        t0 = time.monotonic()
        promote = subprocess.run(
            [*LLMOS, "standby", "promote", "--home", str(s_home), "--wait", "60"],
            capture_output=True, text=True, timeout=90,
        )  # fmt: skip
        assert promote.returncode == 0, promote.stderr
        assert "promoted in" in promote.stdout
        _wait(lambda: _healthy(s_url), "the promoted standby")
        rto = time.monotonic() - t0
        with Client(s_url, TOKEN) as c:
            assert any(p["pid"] == pid and p["name"] == "worker" for p in c.processes())
            assert c.mem_get(mem["id"])["text"] == "the launch code is 0000"
            assert c.fs_read("notes/plan.md") == b"step one\n"
        assert standby.poll() is None  # the standby process is the kernel now
        print(f"standby: RPO {rpo:.2f} s (data age at the kill), RTO {rto:.2f} s", end=" ")
        print(f"(promote command to serving; {promote.stdout.strip()})")


def test_standby_refuses_bad_setups(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(build_app(), ["standby", "--home", str(tmp_path)])
    assert result.exit_code == 2 and "--primary URL and --token" in result.output
    (tmp_path / "llmos.db").write_bytes(b"")
    result = runner.invoke(
        build_app(),
        ["standby", "--primary", "http://127.0.0.1:1", "--token", "t", "--home", str(tmp_path)],
        env={"LLMOS_KEY": KEY},
    )
    assert result.exit_code == 2 and "needs its own home" in result.output
    result = runner.invoke(build_app(), ["standby", "promote", "--home", str(tmp_path / "x")])
    assert result.exit_code == 1 and "no standby follows" in result.output

    def down(tar: Path) -> None:
        raise Unavailable("cannot reach the primary")

    s = sb.Standby(down, tmp_path / "y", 0.5, KEY)
    with pytest.raises(Unavailable, match="cannot reach the primary"):
        s.sync_once()
    assert not (tmp_path / "y" / "standby" / "current").exists()
    with pytest.raises(Unavailable, match="no snapshot has arrived"):
        s.promote()


def test_backup_cli_against_a_live_kernel_then_restore(tmp_path: Path) -> None:
    home, port = tmp_path / "home", free_port()
    url = f"http://127.0.0.1:{port}"
    runner = CliRunner()
    with started(_up(home, port), _env(home), tmp_path / "up.log") as kernel:
        _wait(lambda: _healthy(url), "the kernel")
        with Client(url, TOKEN) as c:
            c.fs_write("a.txt", "alpha")
        args = ["--url", url, "--token", TOKEN]
        made = runner.invoke(build_app(), ["backup", *args])
        assert made.exit_code == 0, made.output
        assert "the master key is not in it" in made.output
        listed = runner.invoke(build_app(), ["backup", "ls", *args])
        path = next((home / "backups").iterdir())
        assert listed.exit_code == 0 and path.name in listed.output
        away = tmp_path / "away"  # --to PATH: downloaded, not written by the kernel
        pulled = runner.invoke(build_app(), ["backup", "--to", str(away), *args])
        assert pulled.exit_code == 0, pulled.output
        assert (away / "manifest.json").is_file() and (away / "llmos.db").is_file()
        assert not list(tmp_path.glob("*.incoming.tar"))
        again = runner.invoke(build_app(), ["backup", "--to", str(away), *args])
        assert again.exit_code == 1 and "not a new or empty directory" in again.output
        refused = runner.invoke(build_app(), ["restore", str(path), "--home", str(home)])
        assert refused.exit_code == 1 and "a kernel is serving" in refused.output
        kernel.terminate()
        kernel.wait(10)
    ok = runner.invoke(build_app(), ["backup", "verify", str(path)])
    assert ok.exit_code == 0 and ok.output.startswith("ok:")
    keyfile = tmp_path / "key"
    keyfile.write_text(KEY)
    dst = tmp_path / "dst"
    nokey = runner.invoke(build_app(), ["restore", str(path), "--home", str(dst)], env={})
    assert nokey.exit_code == 1 and "--key-file" in nokey.output
    done = runner.invoke(
        build_app(), ["restore", str(path), "--home", str(dst), "--key-file", str(keyfile)]
    )
    assert done.exit_code == 0, done.output
    assert (dst / "data-key").read_text().strip() == KEY
    bad = runner.invoke(build_app(), ["up", "--backup-every", "soon"])
    assert bad.exit_code == 2 and "--backup-every must be a duration" in bad.output


def test_follow_keeps_the_last_good_snapshot_and_stops_on_request(tmp_path: Path) -> None:
    import tarfile
    import threading

    from tests.test_backup import KEY as BACKUP_KEY
    from tests.test_backup import make_backup

    snap = make_backup(tmp_path)
    pulls: list[int] = []

    def fetch(tar: Path) -> None:  # a good snapshot, then a corrupt one, then the primary is down
        pulls.append(1)
        if len(pulls) == 1:
            with tarfile.open(tar, "w") as t:
                for f in sorted(snap.iterdir()):
                    t.add(f, arcname=f.name)
        elif len(pulls) == 2:
            with tarfile.open(tar, "w") as t:
                t.add(snap / "manifest.json", arcname="manifest.json")
        else:
            raise Unavailable("cannot reach the primary")

    home = tmp_path / "standby"
    s = sb.Standby(fetch, home, 0.1, BACKUP_KEY, "key file")
    s.check()
    follower = threading.Thread(target=s.follow)
    follower.start()
    try:
        _wait(lambda: len(pulls) >= 3, "three pulls", 30)
        assert "cannot reach the primary" in (sb.read_status(home).get("error") or "")
    finally:
        sb.request_promotion(home)
        follower.join(30)
    assert not follower.is_alive()
    assert (
        sb.read_status(home)["snapshot_at"]
        == json.loads((snap / "manifest.json").read_text())["created_at"]
    )  # the corrupt pull (missing files) never replaced the good one
    got = s.promote()
    assert got.key_source == "key file" and (home / "llmos.db").is_file()
    assert sb.read_status(home)["state"] == "promoted"
    assert not (home / "standby" / "promote").exists()
