"""The audit log: privileged calls and denials are recorded in a hash chain whose
MACs need a key outside the database; editing, deleting or cutting off rows is
caught by `verify`, which names the row — in the kernel, over HTTP and in the CLI."""

from __future__ import annotations

import itertools
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llmos.cli.main import build_app
from llmos.devices import MockDevice
from llmos.errors import Forbidden
from llmos.kernel import Kernel
from llmos.params import Settings
from tests._live_server import live_server


async def boot(home: Path) -> Kernel:
    k = Kernel(Settings(home=home, admin_token="adm"), [MockDevice(slots=1)])
    await k.start()
    return k


async def busy_log(k: Kernel) -> None:
    """Some allowed privileged calls and some denials."""
    admin = k.authenticate("adm")
    made = await k.call("user.add", admin, {"name": "mallory", "role": "user"})
    mallory = k.authenticate(made["token"])
    for _ in range(3):
        with pytest.raises(Forbidden):
            await k.call("sched.set", mallory, {"policy": "rr"})
    await k.call("proc.spawn", mallory, {"name": "p"})
    await k.call("sched.set", admin, {"policy": "fifo"})


async def test_privileged_calls_and_denials_are_chained(tmp_path: Path) -> None:
    k = await boot(tmp_path)
    await busy_log(k)
    admin = k.authenticate("adm")
    rows = await k.call("audit.list", admin, {"limit": 100})
    actions = [(r["action"], r["outcome"]) for r in reversed(rows)]
    assert actions == [
        ("user.add", "allowed"),
        *[("sched.set", "denied")] * 3,
        ("proc.spawn", "allowed"),
        ("sched.set", "allowed"),
    ]
    denied = rows[2]
    assert (denied["actor"], denied["role"]) == ("mallory", "user")
    assert "may not call sched.set" in denied["reason"]
    assert denied["target"] == {"policy": "rr"}
    assert [r["seq"] for r in reversed(rows)] == list(range(1, 7))
    assert all(r["prev"] == p["mac"] for r, p in itertools.pairwise(rows))
    assert await k.call("audit.verify", admin) == {"ok": True, "rows": 6, "head": rows[0]["mac"]}
    # Nothing secret is logged: no token secrets, no message contents.
    assert "llmos-" not in str(rows)
    # A bad token is a denial too, recorded under the id it claimed.
    with pytest.raises(Exception, match="invalid bearer token"):
        k.authenticate("llmos-abcdef-forged")
    last = (await k.call("audit.list", admin, {"limit": 1}))[0]
    assert (last["action"], last["token_id"], last["outcome"]) == ("auth", "abcdef", "denied")
    await k.stop()


@pytest.mark.parametrize(
    ("tamper", "bad_row", "why"),
    [
        ("UPDATE audit SET outcome = 'allowed' WHERE seq = 3", 3, "edited"),
        ("UPDATE audit SET actor = 'admin', mac = mac WHERE seq = 2", 2, "edited"),
        ("DELETE FROM audit WHERE seq = 4", 4, "missing"),
        ("DELETE FROM audit WHERE seq = 6", 6, "cut off"),
        ("UPDATE audit SET ts = ts + 1 WHERE seq = 1", 1, "edited"),
    ],
)
async def test_tampering_is_caught_and_named(
    tmp_path: Path, tamper: str, bad_row: int, why: str
) -> None:
    k = await boot(tmp_path)
    await busy_log(k)
    await k.stop()
    with sqlite3.connect(tmp_path / "llmos.db") as db:  # an attacker with the DB file
        db.execute(tamper)
    k = await boot(tmp_path)
    result = await k.call("audit.verify", k.authenticate("adm"))
    assert not result["ok"]
    assert result["bad_row"] == bad_row and f"row {bad_row}" in result["reason"]
    assert why in result["reason"]
    await k.stop()


async def test_recomputing_a_plain_hash_does_not_help(tmp_path: Path) -> None:
    """Rows are MACed with a key outside the DB: a forged row with a recomputed
    SHA-256 still fails."""
    import hashlib

    k = await boot(tmp_path)
    await busy_log(k)
    await k.stop()
    with sqlite3.connect(tmp_path / "llmos.db") as db:
        db.execute(
            "UPDATE audit SET outcome = 'allowed', mac = ? WHERE seq = 2",
            (hashlib.sha256(b"forged").hexdigest(),),
        )
    k = await boot(tmp_path)
    result = await k.call("audit.verify", k.authenticate("adm"))
    assert result["bad_row"] == 2
    assert (tmp_path / "audit-key").stat().st_mode & 0o777 == 0o600
    await k.stop()


def test_audit_cli_lists_and_verifies_and_fails_on_tampering(tmp_path: Path) -> None:
    runner = CliRunner()
    with live_server(tmp_path) as srv:
        base = ["--url", srv.url, "--token", srv.token]
        made = runner.invoke(build_app(), ["user", "add", "eve", *base])
        assert made.exit_code == 0, made.output
        eve_token = made.output.strip().splitlines()[-1]
        denied = runner.invoke(
            build_app(), ["user", "add", "x", "--url", srv.url, "--token", eve_token]
        )
        assert denied.exit_code == 1 and "may not call user.add" in denied.output
        listed = runner.invoke(build_app(), ["audit", "ls", "--denied", *base])
        assert listed.exit_code == 0 and "user.add" in listed.output and "eve" in listed.output
        ok = runner.invoke(build_app(), ["audit", "verify", *base])
        assert ok.exit_code == 0 and "intact" in ok.output
        with sqlite3.connect(srv.kernel.settings.db_path) as db:
            db.execute("UPDATE audit SET reason = 'nothing to see' WHERE seq = 2")
        broken = runner.invoke(build_app(), ["audit", "verify", *base])
        assert broken.exit_code == 1
        assert "row 2" in broken.output and "tampered" in broken.output
        # A viewer may read the log, a user may not.
        viewer = runner.invoke(build_app(), ["user", "add", "vic", "--role", "viewer", *base])
        vic = viewer.output.strip().splitlines()[-1]
        assert (
            runner.invoke(build_app(), ["audit", "ls", "--url", srv.url, "--token", vic]).exit_code
            == 0
        )
        no = runner.invoke(build_app(), ["audit", "ls", "--url", srv.url, "--token", eve_token])
        assert no.exit_code == 1 and "may not call audit.list" in no.output
