"""Encryption at rest (kernel/crypto.py): sealing, keys, what reaches the disk, legacy
databases, and rotation without downtime — on the kernel, over HTTP and the CLI."""

from __future__ import annotations

import asyncio
import base64
import sqlite3
import stat
import struct
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from typer.testing import CliRunner

from llmos.api import create_app
from llmos.cli.main import build_app
from llmos.devices import MockDevice
from llmos.errors import InvalidRequest, Unavailable
from llmos.kernel import Kernel
from llmos.kernel.crypto import MAGIC, KeyRing, Sealed
from llmos.kernel.masterkey import KEY_FILE, parse_key
from llmos.kernel.memindex import Scope
from llmos.kernel.tokens import Caller
from llmos.params import Settings
from llmos.sdk import Client
from tests._live_server import LiveServer

ADMIN = Caller("admin-env", "admin", "admin")
ALICE = Caller("t-alice", "alice", "user")
# Distinctive sentences: none of their word pairs is in alphabetical order, so not even
# two words of them in a row can come from the index's sorted bags.
FILE_TEXT = "Zany yellow walruses juggle seventeen luminous lanterns beneath quiet harbours"
MEMORY_TEXT = "Violet otters memorise eleven forgotten bassoon concertos"
TURN_TEXT = "Purple turtles negotiate hazelnut treaties"
PINNED_TEXT = "Silver moths prefer xylophone lullabies"
COL = Sealed("t", "c", ("id",))


def settings(home: Path, key: str | None = None) -> Settings:
    return Settings(home=home, admin_token="test-admin", data_key=key)


def new_kernel(home: Path, key: str | None = None) -> Kernel:
    return Kernel(settings(home, key), [MockDevice(slots=2, token_delay=0.0)])


@pytest.fixture
def kernel(tmp_path: Path) -> Iterator[Kernel]:
    k = new_kernel(tmp_path)
    yield k
    k.store.close()


def disk_bytes(home: Path) -> dict[str, bytes]:
    """Every file under LLMOS_HOME: the database, its -wal and -shm, key files..."""
    return {str(p.relative_to(home)): p.read_bytes() for p in home.rglob("*") if p.is_file()}


def leaks(home: Path, *texts: str) -> list[str]:
    found = []
    for name, data in disk_bytes(home).items():
        for text in texts:
            for form in (text.encode(), text.lower().encode(), text.encode("utf-16-le")):
                if form in data:
                    found.append(f"{text!r} in {name}")
    return found


def key_ids(db: sqlite3.Connection) -> set[int]:
    """The data key id in the header of every sealed value, in every sealed table."""
    ids = set()
    for table, column in (
        ("file_versions", "content"),
        ("memories", "text"),
        ("conv_turns", "content"),
        ("conv_core", "system"),
        ("conv_core", "pinned"),
    ):
        for (value,) in db.execute(f"SELECT {column} FROM {table}"):
            assert isinstance(value, bytes) and value.startswith(MAGIC)
            ids.add(struct.unpack(">I", value[len(MAGIC) : len(MAGIC) + 4])[0])
    return ids


# -- sealing -----------------------------------------------------------------------
def test_seal_round_trip_binds_the_row_and_detects_tampering(tmp_path: Path) -> None:
    db = sqlite3.connect(":memory:", isolation_level=None)
    ring = KeyRing(db, bytes(32), "test")
    blob = ring.seal(COL, b"secret \x00 bytes", 7)
    assert ring.open(COL, blob, 7) == b"secret \x00 bytes"
    assert b"secret" not in blob and blob.startswith(MAGIC)
    assert ring.seal(COL, b"same", 7) != ring.seal(COL, b"same", 7)  # a fresh nonce each time
    assert ring.open_text(COL, ring.seal_text(COL, "héllo 🙂", 1), 1) == "héllo 🙂"

    def refused(value: object, *row: object, column: Sealed = COL) -> str:
        with pytest.raises(Unavailable) as exc:
            ring.open(column, value, *row)
        assert exc.value.code == "data_integrity"
        return exc.value.message

    assert "moved from another row" in refused(blob, 8)  # another row's value
    assert "moved from another row" in refused(blob, 7, column=Sealed("t", "d", ("id",)))
    for i in (len(MAGIC), len(MAGIC) + 5, len(blob) // 2, len(blob) - 1):  # any flipped byte
        bad = bytearray(blob)
        bad[i] ^= 0x01
        message = refused(bytes(bad), 7)
        assert "altered" in message or "retired or unknown" in message
    assert "not sealed" in refused("plain text", 7)
    assert "not sealed" in refused(b"short", 7)
    assert "unknown format" in refused(b"xxxx" + blob[4:], 7)
    db.close()


def test_wrong_master_key_is_a_clear_error_not_garbage(tmp_path: Path) -> None:
    db = sqlite3.connect(str(tmp_path / "x.db"), isolation_level=None)
    KeyRing(db, bytes(32), "first")
    with pytest.raises(InvalidRequest) as exc:
        KeyRing(db, bytes([1]) * 32, "LLMOS_KEY")
    assert exc.value.param == "LLMOS_KEY"
    assert "not the one this database was encrypted with" in exc.value.message
    db.close()


@pytest.mark.parametrize(
    "text",
    [
        "",
        "short",
        base64.b64encode(bytes(16)).decode(),  # 16 bytes: AES-128 is not what we use
        base64.b64encode(bytes(33)).decode(),
        "zz" * 32,  # 64 characters, not hex, not base64 of 32 bytes
        "not base64 at all!",
    ],
)
def test_bad_llmos_key_is_refused_naming_it(text: str) -> None:
    with pytest.raises(InvalidRequest) as exc:
        parse_key(text, "LLMOS_KEY", "LLMOS_KEY")
    assert exc.value.param == "LLMOS_KEY"
    assert "LLMOS_KEY must be a 32-byte key" in exc.value.message


def test_llmos_key_accepts_base64_urlsafe_base64_and_hex() -> None:
    raw = bytes(range(200, 232))
    for text in (
        base64.b64encode(raw).decode(),
        base64.urlsafe_b64encode(raw).decode(),
        raw.hex(),
        raw.hex().upper() + "\n",
    ):
        assert parse_key(text, "LLMOS_KEY", "LLMOS_KEY") == raw


# -- keys at start -----------------------------------------------------------------
def test_key_file_is_made_0600_at_first_start_and_reused(tmp_path: Path) -> None:
    k = new_kernel(tmp_path)
    path = tmp_path / KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(parse_key(path.read_text(), "key file", "key")) == 32
    assert k.keys.source == str(path)
    k.files.write("alice", "a.txt", FILE_TEXT.encode())
    k.store.close()
    again = new_kernel(tmp_path)
    assert path.read_text() == path.read_text()  # not replaced
    assert again.files.read("alice", "a.txt") == FILE_TEXT.encode()
    again.store.close()


def test_llmos_key_is_honoured_and_required_afterwards(tmp_path: Path) -> None:
    key = base64.b64encode(bytes(range(32))).decode()
    k = new_kernel(tmp_path, key)
    assert not (tmp_path / KEY_FILE).exists()  # LLMOS_KEY wins: no key file
    assert k.keys.status()["master_key"] == "LLMOS_KEY"
    k.files.write("alice", "a.txt", FILE_TEXT.encode())
    mid = k.memory.add("alice", None, MEMORY_TEXT)["id"]
    k.store.close()

    again = new_kernel(tmp_path, bytes(range(32)).hex())  # the same key, as hex
    assert again.files.read("alice", "a.txt") == FILE_TEXT.encode()
    assert again.memory.get(Scope("alice"), mid)["text"] == MEMORY_TEXT
    again.store.close()

    with pytest.raises(InvalidRequest) as exc:  # another key: refused, nothing garbled
        new_kernel(tmp_path, base64.b64encode(bytes(32)).decode())
    assert exc.value.param == "LLMOS_KEY"
    with pytest.raises(InvalidRequest) as exc:  # no key at all: no fresh key file either
        new_kernel(tmp_path)
    assert "no master key" in exc.value.message and "LLMOS_KEY" in exc.value.message
    assert not (tmp_path / KEY_FILE).exists()


# -- what reaches the disk -----------------------------------------------------------
async def test_no_plaintext_on_disk_yet_read_and_search_work(tmp_path: Path) -> None:
    k = new_kernel(tmp_path)
    await k.start()
    try:
        await k.call("fs.write", ADMIN, {"path": "notes/plan.txt", "content": FILE_TEXT})
        await k.call("fs.write", ADMIN, {"path": "notes/plan.txt", "content": FILE_TEXT + "!"})
        await k.call("mem.add", ADMIN, {"text": MEMORY_TEXT, "tags": ["t"]})
        k.conversations.append(1, "user", TURN_TEXT, 5)
        k.conversations.set_core(1, "You are terse.", [PINNED_TEXT])
        k.conversations.save_view(1, {"recalled": [MEMORY_TEXT]})

        got = await k.call("fs.read", ADMIN, {"path": "notes/plan.txt", "version": 1})
        assert got["content"] == FILE_TEXT
        hits = await k.call("fs.search", ADMIN, {"query": "luminous LANTERNS"})
        assert [h["path"] for h in hits] == ["notes/plan.txt"]
        assert "**luminous** **lanterns**" in hits[0]["snippet"]
        assert await k.call("fs.search", ADMIN, {"query": "walrus"}) == []  # words, whole
        found = await k.call("mem.search", ADMIN, {"query": "bassoon concertos"})
        assert [m["text"] for m in found] == [MEMORY_TEXT]
        assert k.conversations.turns(1)[0].content == TURN_TEXT
        assert k.conversations.core(1)["pinned"] == [PINNED_TEXT]
        assert k.conversations.view(1) == {"recalled": [MEMORY_TEXT]}

        assert leaks(tmp_path, FILE_TEXT, MEMORY_TEXT, TURN_TEXT, PINNED_TEXT) == []
        k.store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        assert leaks(tmp_path, FILE_TEXT, MEMORY_TEXT, TURN_TEXT, PINNED_TEXT) == []
        # Not even two words in their order: the index keeps sorted bags of words.
        assert leaks(tmp_path, "yellow walruses", "otters memorise", "moths prefer") == []
    finally:
        await k.stop()


def make_legacy_db(path: Path) -> None:
    """A database as llmos wrote it before encryption at rest: plaintext contents,
    FTS5 tables holding (or pointing at) the plaintext."""
    db = sqlite3.connect(str(path), isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(
        """
        CREATE TABLE files (id INTEGER PRIMARY KEY, owner TEXT NOT NULL, path TEXT NOT NULL,
            version INTEGER NOT NULL, size INTEGER NOT NULL, sha256 TEXT NOT NULL,
            deleted INTEGER NOT NULL DEFAULT 0, created_at REAL NOT NULL,
            updated_at REAL NOT NULL, UNIQUE (owner, path));
        CREATE TABLE file_versions (owner TEXT NOT NULL, path TEXT NOT NULL,
            version INTEGER NOT NULL, content BLOB NOT NULL, sha256 TEXT NOT NULL,
            size INTEGER NOT NULL, created_at REAL NOT NULL, deleted INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (owner, path, version));
        CREATE VIRTUAL TABLE files_fts USING fts5(okey, path, body, tokenize='unicode61');
        CREATE TABLE memories (id INTEGER PRIMARY KEY AUTOINCREMENT, owner TEXT NOT NULL,
            pid INTEGER, text TEXT NOT NULL, tags TEXT NOT NULL DEFAULT '[]',
            meta TEXT NOT NULL DEFAULT '{}', created_at REAL NOT NULL, updated_at REAL NOT NULL,
            embedding BLOB);
        CREATE VIRTUAL TABLE memories_fts USING fts5(
            text, content='memories', content_rowid='id', tokenize='unicode61');
        CREATE VIRTUAL TABLE memories_vocab USING fts5vocab(memories_fts, 'row');
        CREATE TABLE conv_core (pid INTEGER PRIMARY KEY, system TEXT NOT NULL DEFAULT '',
            pinned TEXT NOT NULL DEFAULT '[]', window_start INTEGER NOT NULL DEFAULT 0,
            view TEXT);
        CREATE TABLE conv_turns (pid INTEGER NOT NULL, idx INTEGER NOT NULL,
            role TEXT NOT NULL, content TEXT NOT NULL, tokens INTEGER NOT NULL,
            memory_id INTEGER, created_at REAL NOT NULL, PRIMARY KEY (pid, idx));
        """
    )
    data = FILE_TEXT.encode()
    db.execute(
        "INSERT INTO files VALUES (1, 'admin', 'old.txt', 1, ?, 'x', 0, 1.0, 1.0)", (len(data),)
    )
    db.execute(
        "INSERT INTO file_versions VALUES ('admin', 'old.txt', 1, ?, 'x', ?, 1.0, 0)",
        (data, len(data)),
    )
    db.execute(
        "INSERT INTO files_fts (rowid, okey, path, body) VALUES (?, 'o1', 'old.txt', ?)",
        (1 << 20, FILE_TEXT),
    )
    db.execute(
        "INSERT INTO memories (id, owner, pid, text, created_at, updated_at)"
        " VALUES (1, 'admin', NULL, ?, 1.0, 1.0)",
        (MEMORY_TEXT,),
    )
    db.execute("INSERT INTO memories_fts (rowid, text) VALUES (1, ?)", (MEMORY_TEXT,))
    db.execute("INSERT INTO conv_core (pid, pinned) VALUES (3, ?)", (f'["{PINNED_TEXT}"]',))
    db.execute("INSERT INTO conv_turns VALUES (3, 0, 'user', ?, 5, NULL, 1.0)", (TURN_TEXT,))
    db.close()


async def test_a_database_from_before_encryption_is_encrypted_at_start(tmp_path: Path) -> None:
    make_legacy_db(tmp_path / "llmos.db")
    assert leaks(tmp_path, FILE_TEXT, MEMORY_TEXT)  # the premise: plaintext on disk
    k = new_kernel(tmp_path)
    await k.start()
    try:
        assert leaks(tmp_path, FILE_TEXT, MEMORY_TEXT, TURN_TEXT, PINNED_TEXT) == []
        assert key_ids(k.store.db) == {1}
        got = await k.call("fs.read", ADMIN, {"path": "old.txt"})
        assert got["content"] == FILE_TEXT
        hits = await k.call("fs.search", ADMIN, {"query": "harbours"})
        assert [h["path"] for h in hits] == ["old.txt"]
        found = await k.call("mem.search", ADMIN, {"query": "otters"})
        assert [m["text"] for m in found] == [MEMORY_TEXT]
        assert k.conversations.turns(3)[0].content == TURN_TEXT
        assert k.conversations.core(3) == {"system": "", "pinned": [PINNED_TEXT], "window_start": 0}
        # Writes after the move keep the index right (deleting repeats the bag indexed).
        await k.call("fs.write", ADMIN, {"path": "old.txt", "content": "fresh words"})
        assert await k.call("fs.search", ADMIN, {"query": "harbours"}) == []
        await k.call("mem.delete", ADMIN, {"id": 1})
        assert await k.call("mem.search", ADMIN, {"query": "otters"}) == []
    finally:
        await k.stop()


# -- rotation ------------------------------------------------------------------------
@pytest_asyncio.fixture
async def busy(tmp_path: Path) -> AsyncIterator[Kernel]:
    """A started kernel holding enough rows for many rotation batches."""
    k = new_kernel(tmp_path)
    await k.start()
    fill(k)
    yield k
    await k.stop()


def fill(k: Kernel) -> None:
    for i in range(150):
        k.files.write("alice", f"f{i}.txt", f"file {i} says {FILE_TEXT}".encode())
    k.memory.add_many("alice", None, [f"memory {i}: {MEMORY_TEXT}" for i in range(150)])
    for i in range(20):
        k.conversations.append(9, "user", f"turn {i}", 2)
    k.conversations.set_core(9, "system words", [PINNED_TEXT])


async def test_rotation_reencrypts_everything_while_reads_and_writes_go_on(busy: Kernel) -> None:
    k = busy
    before = k.keys.status()
    assert before["active_key"] == 1 and before["rows_left"] == 0
    status = await k.call("key.rotate", ADMIN, {})
    assert status["active_key"] == 2
    assert status["running"] is True
    assert status["rows_left"] > 300  # everything is still under key 1
    assert {(x["id"], x["state"]) for x in status["keys"]} == {(1, "retiring"), (2, "active")}

    rounds, seen_left = 0, []
    while k.keys.sweeping:  # between the sweep's batches: reads and writes go on
        i = rounds % 150
        assert k.files.read("alice", f"f{i}.txt") == f"file {i} says {FILE_TEXT}".encode()
        assert k.memory.get(Scope("alice"), i + 1)["text"] == f"memory {i}: {MEMORY_TEXT}"
        k.files.write("alice", f"new{rounds}.txt", b"written during rotation")
        k.memory.update(Scope("alice"), 150 - i, text=f"updated {rounds}")
        k.conversations.append(9, "assistant", f"reply {rounds}", 2)
        seen_left.append(k.keys.rows_left())
        rounds += 1
        await asyncio.sleep(0)
    assert k.keys.error is None
    assert rounds > 3  # the sweep yielded between batches, many times
    assert seen_left[0] > seen_left[-1] >= 0  # ... and made progress meanwhile

    after = await k.call("key.status", ADMIN, {})
    assert after["rows_left"] == 0 and after["running"] is False
    assert {(x["id"], x["state"]) for x in after["keys"]} == {(1, "retired"), (2, "active")}
    assert key_ids(k.store.db) == {2}
    wrapped = k.store.db.execute("SELECT wrapped FROM data_keys WHERE id = 1").fetchone()[0]
    assert wrapped is None  # the old key is gone for good
    for i in range(150):
        assert k.files.read("alice", f"f{i}.txt") == f"file {i} says {FILE_TEXT}".encode()
    assert k.files.read("alice", f"new{rounds - 1}.txt") == b"written during rotation"
    assert [h["path"] for h in k.files.search("alice", "f7")] == ["f7.txt"]
    assert k.conversations.core(9)["pinned"] == [PINNED_TEXT]
    assert len(k.conversations.turns(9)) == 20 + rounds


async def test_rotating_again_mid_sweep_and_resuming_after_a_restart(tmp_path: Path) -> None:
    k = new_kernel(tmp_path)
    await k.start()
    try:
        fill(k)
        await rotate_twice_then_stop(k)
    except BaseException:
        await k.stop()
        raise
    k2 = new_kernel(tmp_path)
    assert k2.keys.rows_left() > 0 and k2.keys.pending
    await k2.start()  # a rotation cut short by a stop is finished at the next start
    try:
        while k2.keys.sweeping:
            await asyncio.sleep(0.01)
        assert k2.keys.rows_left() == 0 and not k2.keys.pending
        assert key_ids(k2.store.db) == {4}
        assert k2.files.read("alice", "f3.txt") == f"file 3 says {FILE_TEXT}".encode()
    finally:
        await k2.stop()


async def rotate_twice_then_stop(k: Kernel) -> None:
    await k.call("key.rotate", ADMIN, {})
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    status = await k.call("key.rotate", ADMIN, {})  # while the first sweep runs
    assert status["active_key"] == 3
    await k.keys.sweep()  # returns at once: one sweep at a time ...
    while k.keys.sweeping:  # ... which goes round again for key 3
        await asyncio.sleep(0.01)
    states = {x["id"]: x["state"] for x in k.keys.status()["keys"]}
    assert states == {1: "retired", 2: "retired", 3: "active"}
    assert key_ids(k.store.db) == {3}

    await k.call("key.rotate", ADMIN, {})  # key 4; stopped after a batch or two
    await asyncio.sleep(0)
    await k.stop()


async def test_a_tampered_row_stops_the_sweep_with_a_reason(busy: Kernel) -> None:
    k = busy
    k.store.db.execute(
        "UPDATE memories SET text = (SELECT text FROM memories WHERE id = 2) WHERE id = 1"
    )
    with pytest.raises(Unavailable) as exc:
        k.memory.get(Scope("alice"), 1)
    assert exc.value.code == "data_integrity" and exc.value.status == 503
    await k.call("key.rotate", ADMIN, {})
    while k.keys.sweeping:
        await asyncio.sleep(0.01)
    status = await k.call("key.status", ADMIN, {})
    assert "memories.text of row [1]" in status["error"]
    assert status["rows_left"] == 1
    assert {x["id"]: x["state"] for x in status["keys"]}[1] == "retiring"  # still needed


# -- HTTP and CLI -----------------------------------------------------------------------
async def test_key_routes(tmp_path: Path) -> None:
    k = new_kernel(tmp_path)
    await k.start()
    user_token, _ = k.tokens.issue("bob", "user")
    app = create_app(k, manage_kernel=False)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://llmos"
    ) as http:
        admin = {"Authorization": "Bearer test-admin"}
        r = await http.get("/v1/sys/key", headers=admin)
        assert r.status_code == 200
        body = r.json()
        assert body["algorithm"] == "AES-256-GCM" and body["active_key"] == 1
        assert "file_versions.content" in body["sealed"]
        r = await http.post("/v1/sys/key/rotate", headers=admin)
        assert r.status_code == 200 and r.json()["active_key"] == 2
        for method, url in (("GET", "/v1/sys/key"), ("POST", "/v1/sys/key/rotate")):
            r = await http.request(method, url, headers={"Authorization": f"Bearer {user_token}"})
            assert r.status_code == 403
            assert r.json()["error"]["type"] == "permission_error"
            r = await http.request(method, url)
            assert r.status_code == 401
    while k.keys.sweeping:
        await asyncio.sleep(0.01)
    assert k.keys.status()["active_key"] == 2
    await k.stop()


def cli(server: LiveServer, *args: str, token: str | None = None) -> Any:
    argv = [*args, "--url", server.url, "--token", token or server.token]
    return CliRunner().invoke(build_app(), argv)


def test_key_cli_status_and_rotate(server: LiveServer, client: Client) -> None:
    client.fs_write("cli.txt", FILE_TEXT.encode())
    first = client.key_status()["active_key"]
    result = cli(server, "key", "status")
    assert result.exit_code == 0, result.output
    assert f"active data key {first}" in result.stdout and "AES-256-GCM" in result.stdout
    result = cli(server, "key", "rotate", "--wait")
    assert result.exit_code == 0, result.output
    assert f"data key {first + 1} is active" in result.stdout
    assert "rows left to re-encrypt: 0" in result.stdout
    status = client.key_status()
    assert status["active_key"] == first + 1 and status["rows_left"] == 0
    assert {x["id"]: x["state"] for x in status["keys"]}[first] == "retired"
    assert client.fs_read("cli.txt") == FILE_TEXT.encode()

    token = client.add_user("carol-crypto", "user")["token"]
    result = cli(server, "key", "rotate", token=token)
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ") and "Traceback" not in result.output


def test_search_on_bags_of_words_still_finds_compound_words(kernel: Kernel) -> None:
    """A bag has no phrases: a query word of several parts asks for each part."""
    kernel.files.write("alice", "mail.txt", b"send the e-mail to snake_case_name today")
    for query in ("e-mail", "E-MAIL", "snake_case_name", "snake_ca*", "mail e"):
        assert [h["path"] for h in kernel.files.search("alice", query)] == ["mail.txt"], query
    hit = kernel.files.search("alice", "e-mail")[0]
    assert hit["snippet"] == "send the **e**-**mail** to snake_case_name today"
    mid = kernel.memory.add("alice", None, "the config_file lives in /etc")["id"]
    found = kernel.memory.search(Scope("alice"), "where is config_file?")
    assert [m["id"] for m in found] == [mid]
