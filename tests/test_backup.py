"""Backups: a snapshot under load restores to the same state, table by table and file
by file; restore refuses live homes, corrupt backups, wrong and missing keys; the
scheduled backups keep only the newest `keep`."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import llmos.api.server
from llmos.cli.main import build_app
from llmos.devices import MockDevice
from llmos.errors import Forbidden, InvalidRequest
from llmos.kernel import Kernel
from llmos.kernel import backup as bk
from llmos.params import Settings

KEY = base64.b64encode(bytes(range(32))).decode()
MSGS = [{"role": "user", "content": "hello"}]


async def start(home: Path, **settings: Any) -> Kernel:
    kernel = Kernel(
        Settings(home=home, admin_token="adm", data_key=KEY, **settings),
        [MockDevice(slots=2, token_delay=0.001)],
    )
    await kernel.start()
    return kernel


def dump(db_path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every ordinary table's rows, sorted, read in one transaction."""
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        db.execute("BEGIN")
        names = [
            r[0]
            for r in db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'"
                " AND sql NOT LIKE 'CREATE VIRTUAL%' ORDER BY name"
            )
        ]
        out = {n: sorted(db.execute(f'SELECT * FROM "{n}"').fetchall(), key=repr) for n in names}
        db.execute("COMMIT")
        return out
    finally:
        db.close()


async def writers(k: Kernel, w: int, stop: asyncio.Event, done: list[str]) -> None:
    admin = k.authenticate("adm")
    i = 0
    while not stop.is_set():
        i += 1
        await k.call("fs.write", admin, {"path": f"load/{w}-{i}.txt", "content": f"file {i}"})
        await k.call("mem.add", admin, {"text": f"memory number {i}"})
        await k.call("proc.spawn", admin, {"name": f"p{i}"})
        req = await k.call("llm.chat", admin, {"model": "mock", "messages": MSGS, "max_tokens": 3})
        await req.outcome()
        done.append(f"load/{w}-{i}.txt")
        await asyncio.sleep(0)


async def test_backup_under_load_restores_identical_state(tmp_path: Path) -> None:
    src = tmp_path / "src"
    k = await start(src)
    admin = k.authenticate("adm")
    before = await k.call("fs.write", admin, {"path": "keep/a.txt", "content": "before backup"})
    mem = await k.call("mem.add", admin, {"text": "remember the milk"})
    stop, done = asyncio.Event(), []  # type: ignore[var-annotated]
    load = [asyncio.create_task(writers(k, w, stop, done)) for w in range(3)]
    await asyncio.sleep(0.3)
    committed = list(done)  # awaited before the backup began: it must hold them
    manifest = await k.call("backup.create", admin, {})
    await asyncio.sleep(0.2)
    stop.set()
    await asyncio.gather(*load)
    assert len(done) > len(committed) > 0  # writes went on during and after the backup
    path = Path(manifest["path"])
    assert path.parent == src / "backups" and not manifest["key_included"]
    assert bk.verify(path)["files"] == manifest["files"]
    assert "data-key" not in manifest["files"] and "audit-key" in manifest["files"]
    snap = dump(path / "llmos.db")
    assert {t: len(r) for t, r in snap.items()} == {
        t: n for t, n in manifest["tables"].items() if t in snap
    }
    final = dump(src / "llmos.db")  # the source kept growing; the copy is a prefix of it
    for table in ("files", "file_versions", "memories", "audit", "telemetry"):
        assert set(snap[table]) <= set(final[table]), table
    # processes' counters keep moving; who they are does not
    assert {r[:3] for r in snap["processes"]} <= {r[:3] for r in final["processes"]}
    assert len(snap["audit"]) < len(final["audit"])  # proof the copy is a point in time
    await k.stop()

    # restore into a fresh home: same tables row for row, same files byte for byte
    dst = tmp_path / "dst"
    with pytest.raises(InvalidRequest, match="does not carry its master key"):
        bk.restore(path, dst)
    assert not (dst / "llmos.db").exists()
    got = bk.restore(path, dst, KEY, "key file")
    assert got.key_source == "key file" and (dst / "data-key").is_file()
    assert dump(dst / "llmos.db") == snap
    for name, want in manifest["files"].items():
        assert bk.sha256(dst / name) == want["sha256"]

    k2 = await start(dst, backup_keep=3)
    admin2 = k2.authenticate("adm")
    read = await k2.call("fs.read", admin2, {"path": "keep/a.txt"})
    assert read["content"] == "before backup" and before["version"] == 1
    assert (await k2.call("mem.get", admin2, {"id": mem["id"]}))["text"] == "remember the milk"
    for p in committed:
        assert (await k2.call("fs.read", admin2, {"path": p}))["content"].startswith("file ")
    assert k2.audit.verify()["ok"]  # the head was written for the copy, not the live log
    await k2.stop()


async def test_quiesced_backup_equals_source_exactly(tmp_path: Path) -> None:
    k = await start(tmp_path / "src")
    admin = k.authenticate("adm")
    await k.call("fs.write", admin, {"path": "x.bin", "content_b64": "AAEC"})
    await k.call("mem.add", admin, {"text": "a fact"})
    await k.sysmon.stop()  # nothing else writes now
    source = dump(tmp_path / "src" / "llmos.db")
    dest = tmp_path / "out"
    manifest = await k.backups.create(dest, include_key=True)
    after = dump(tmp_path / "src" / "llmos.db")
    await k.stop()
    assert manifest["key_included"] and "data-key" in manifest["files"]
    # the backup.create call itself is not audited here (not a syscall); so equal:
    assert after == source == dump(dest / "llmos.db")
    got = bk.restore(dest, tmp_path / "dst")  # the key comes from the backup itself
    assert got.key_source == "backup"
    assert dump(tmp_path / "dst" / "llmos.db") == source


async def test_backup_syscall_is_for_admins_and_checks_its_arguments(tmp_path: Path) -> None:
    k = await start(tmp_path)
    admin = k.authenticate("adm")
    user_token, _ = k.tokens.issue("bob", "user")
    bob = k.authenticate(user_token)
    with pytest.raises(Forbidden):
        await k.call("backup.create", bob, {})
    with pytest.raises(InvalidRequest) as exc:
        await k.call("backup.create", admin, {"include_key": "yes"})
    assert exc.value.param == "include_key"
    # the kernel writes backups only under its home: `to` is a name, never a path
    for to in (str(tmp_path / "elsewhere"), "../up", "a/b", "", ".hidden", "x" * 101, 7):
        with pytest.raises(InvalidRequest) as exc:
            await k.call("backup.create", admin, {"to": to})
        assert exc.value.param == "to"
    assert not (tmp_path / "elsewhere").exists()
    out = tmp_path / "backups" / "taken"
    out.mkdir(parents=True)
    (out / "junk").write_text("x")
    with pytest.raises(InvalidRequest, match="not empty"):
        await k.call("backup.create", admin, {"to": "taken"})
    listed = await k.call("backup.list", admin, {})
    assert listed == []
    named = await k.call("backup.create", admin, {"to": "nightly-1"})
    assert named["path"] == str(tmp_path / "backups" / "nightly-1")
    await k.call("backup.create", admin, {})
    assert len(await k.call("backup.list", admin, {})) == 2
    audit = k.audit.listing(actor="admin")
    assert any(r["action"] == "backup.create" and r["outcome"] == "allowed" for r in audit)
    await k.stop()


def make_backup(tmp_path: Path, include_key: bool = False) -> Path:
    async def go() -> Path:
        k = await start(tmp_path / "src")
        admin = k.authenticate("adm")
        await k.call("fs.write", admin, {"path": "f.txt", "content": "hello"})
        m = await k.backups.create(tmp_path / "bk", include_key)
        await k.stop()
        return Path(m["path"])

    return asyncio.run(go())


def test_restore_refuses_live_and_nonempty_homes(tmp_path: Path) -> None:
    path = make_backup(tmp_path)
    live = tmp_path / "live"
    lock = bk.HomeLock(live)
    try:
        with pytest.raises(InvalidRequest, match="a kernel is serving"):
            bk.restore(path, live, KEY)
        with pytest.raises(InvalidRequest, match="another kernel"):
            bk.HomeLock(live)
    finally:
        lock.release()
    assert not bk.HomeLock.held(live)
    with pytest.raises(InvalidRequest, match="already holds a database"):
        bk.restore(path, tmp_path / "src", KEY)
    bk.restore(path, live, KEY)  # the lock is gone: an empty home is fine
    with pytest.raises(InvalidRequest, match="already holds"):
        bk.restore(path, live, KEY)


def test_restore_refuses_corrupt_backups_and_wrong_keys(tmp_path: Path) -> None:
    path = make_backup(tmp_path)
    wrong = base64.b64encode(os.urandom(32)).decode()
    with pytest.raises(InvalidRequest, match="wrong master key: data key 1"):
        bk.restore(path, tmp_path / "a", wrong)
    with pytest.raises(InvalidRequest, match="32-byte key"):
        bk.restore(path, tmp_path / "a", "not a key")
    assert not (tmp_path / "a" / "llmos.db").exists()
    db = path / "llmos.db"
    data = bytearray(db.read_bytes())
    data[-100] ^= 0xFF
    db.write_bytes(bytes(data))
    with pytest.raises(InvalidRequest, match=r"llmos\.db fails its checksum"):
        bk.restore(path, tmp_path / "b", KEY)
    (path / "extra").write_text("x")
    with pytest.raises(InvalidRequest, match="unexpected \\['extra'\\]"):
        bk.verify(path)
    (path / "manifest.json").write_text("{")
    with pytest.raises(InvalidRequest, match="not a valid manifest"):
        bk.verify(path)
    with pytest.raises(InvalidRequest, match="not a backup"):
        bk.verify(tmp_path)


async def test_scheduled_backups_keep_only_the_newest(tmp_path: Path) -> None:
    k = await start(tmp_path, backup_keep=2)
    made = [await k.backups.run_once() for _ in range(4)]
    left = k.backups.kernel.settings.home / "backups"
    names = sorted(p.name for p in left.iterdir())
    assert names == sorted(Path(m["path"]).name for m in made[-2:])
    assert made[-1]["pruned"] == [made[1]["path"]]
    rows = k.audit.listing(actor="kernel")
    assert [r["action"] for r in rows].count("backup.scheduled") == 4
    assert json.loads(json.dumps(rows[0]["target"]))["pruned"] == 1
    await k.stop()


async def test_the_schedule_runs_on_its_own(tmp_path: Path) -> None:
    k = await start(tmp_path, backup_every_s=1.0, backup_keep=1)
    for _ in range(100):
        await asyncio.sleep(0.05)
        if bk.list_backups(tmp_path / "backups"):
            break
    await k.stop()
    assert k.backups.task is None
    assert len(bk.list_backups(tmp_path / "backups")) == 1


def test_settings_refuse_bad_schedules() -> None:
    with pytest.raises(InvalidRequest) as exc:
        Settings(backup_every_s=0.5).validate()
    assert exc.value.param == "backup_every"
    with pytest.raises(InvalidRequest) as exc:
        Settings(backup_keep=0).validate()
    assert exc.value.param == "backup_keep"


def test_up_takes_a_backup_schedule(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    served: list[Settings] = []
    monkeypatch.setattr(llmos.api.server, "serve", served.append)
    home = ["--home", str(tmp_path), "--device", "mock"]
    ok = CliRunner().invoke(
        build_app(), ["up", *home, "--backup-every", "1h", "--backup-keep", "3"]
    )
    assert ok.exit_code == 0, ok.output
    assert served[0].backup_every_s == 3600 and served[0].backup_keep == 3
    bad = CliRunner().invoke(build_app(), ["up", *home, "--backup-every", "0.5s"])
    assert bad.exit_code == 2 and "backup_every must be 0 (off)" in bad.output
    assert len(served) == 1
