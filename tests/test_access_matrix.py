"""The access matrix: users × roles × resources × operations, every expected allow
and deny, and every denial in the audit log.

The world: alice owns a process, files under proj/ and private/, and a memory.
She shares the process with group eng (read), proj/ with bob (read) and with group
ops (write), and the memory with carol (write). bob is in eng, carol in ops, dave
has nothing, vera is a read-only viewer, and `proc` is one of alice's processes
whose capability allows reading proj/ files and reading memories only."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from llmos.devices import MockDevice
from llmos.errors import Forbidden, Hidden, LlmosError, NotFound
from llmos.kernel import Caller, Kernel
from llmos.params import Settings

OK, DENY, HIDE = "ok", "403", "404"
ACTORS = ("admin", "alice", "bob", "carol", "dave", "vera", "proc")


@dataclass
class World:
    k: Kernel
    who: dict[str, Caller]
    pid: int
    memory: int

    async def fresh_process(self) -> int:
        """A new process of alice's shared like the first (for destructive ops)."""
        proc = await self.k.call("proc.spawn", self.who["alice"], {"name": "victim"})
        await self.k.call(
            "share.add",
            self.who["alice"],
            {"kind": "process", "resource": proc["pid"], "principal": "group:eng"},
        )
        return int(proc["pid"])


@pytest_asyncio.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    k = Kernel(Settings(home=tmp_path, admin_token="adm"), [MockDevice(slots=2)])
    await k.start()
    admin = k.authenticate("adm")
    who = {"admin": admin}
    for name, role, groups in [
        ("alice", "user", []),
        ("bob", "user", ["eng"]),
        ("carol", "user", ["ops"]),
        ("dave", "user", []),
        ("vera", "viewer", []),
    ]:
        made = await k.call("user.add", admin, {"name": name, "role": role, "groups": groups})
        who[name] = k.authenticate(made["token"])
    alice = who["alice"]
    pid = (await k.call("proc.spawn", alice, {"name": "agent"}))["pid"]
    await k.call("fs.write", alice, {"path": "proj/plan.md", "content": "ship it"})
    await k.call("fs.write", alice, {"path": "private/diary.md", "content": "dear diary"})
    memory = (await k.call("mem.add", alice, {"text": "alice likes green tea"}))["id"]
    for share in [
        {"kind": "process", "resource": pid, "principal": "group:eng", "perm": "read"},
        {"kind": "file", "resource": "proj", "principal": "user:bob", "perm": "read"},
        {"kind": "file", "resource": "proj", "principal": "group:ops", "perm": "write"},
        {"kind": "memory", "resource": memory, "principal": "user:carol", "perm": "write"},
    ]:
        await k.call("share.add", alice, share)
    caps = {
        "syscalls": ["fs.read", "fs.list", "mem.get", "mem.search", "llm.*"],
        "files": {"read": ["proj"]},
        "memory": "read",
    }
    spawned = await k.call("proc.spawn", alice, {"name": "reader", "capabilities": caps})
    who["proc"] = k.authenticate(spawned["token"])
    yield World(k, who, pid, memory)
    await k.stop()


Op = Callable[[World, Caller], Awaitable[Any]]


async def proc_read(w: World, c: Caller) -> Any:
    return await w.k.call("proc.get", c, {"pid": w.pid})


async def proc_kill(w: World, c: Caller) -> Any:
    return await w.k.call("proc.kill", c, {"pid": await w.fresh_process()})


async def file_read(w: World, c: Caller) -> Any:
    return await w.k.call("fs.read", c, {"owner": "alice", "path": "proj/plan.md"})


async def file_read_private(w: World, c: Caller) -> Any:
    return await w.k.call("fs.read", c, {"owner": "alice", "path": "private/diary.md"})


async def file_write(w: World, c: Caller) -> Any:
    args = {"owner": "alice", "path": "proj/plan.md", "content": "changed"}
    return await w.k.call("fs.write", c, args)


async def file_list(w: World, c: Caller) -> Any:
    return await w.k.call("fs.list", c, {"owner": "alice"})


async def mem_read(w: World, c: Caller) -> Any:
    return await w.k.call("mem.get", c, {"owner": "alice", "id": w.memory})


async def mem_write(w: World, c: Caller) -> Any:
    args = {"owner": "alice", "id": w.memory, "text": "alice likes black coffee"}
    return await w.k.call("mem.update", c, args)


# op -> expected outcome per actor, in ACTORS order
MATRIX: dict[str, tuple[Op, tuple[str, ...]]] = {
    "proc.read": (proc_read, (OK, OK, OK, HIDE, HIDE, OK, DENY)),
    "proc.kill": (proc_kill, (OK, OK, DENY, HIDE, HIDE, DENY, DENY)),
    "file.read": (file_read, (OK, OK, OK, OK, HIDE, HIDE, OK)),
    "file.read_private": (file_read_private, (OK, OK, HIDE, HIDE, HIDE, HIDE, DENY)),
    "file.write": (file_write, (OK, OK, DENY, OK, HIDE, DENY, DENY)),
    "file.list": (file_list, (OK, OK, OK, OK, HIDE, HIDE, OK)),
    "mem.read": (mem_read, (OK, OK, HIDE, OK, HIDE, HIDE, HIDE)),
    "mem.write": (mem_write, (OK, OK, HIDE, OK, HIDE, DENY, DENY)),
}


async def outcome(op: Op, w: World, c: Caller) -> tuple[str, Any]:
    try:
        return OK, await op(w, c)
    except Forbidden as exc:
        return DENY, exc
    except NotFound as exc:
        return HIDE, exc


async def test_the_whole_access_matrix(world: World) -> None:
    got: dict[tuple[str, str], str] = {}
    results: dict[tuple[str, str], Any] = {}
    for name, (op, _) in MATRIX.items():
        for actor in ACTORS:
            got[name, actor], results[name, actor] = await outcome(op, world, world.who[actor])
    want = {
        (name, actor): exp
        for name, (_, expected) in MATRIX.items()
        for actor, exp in zip(ACTORS, expected, strict=True)
    }
    wrong = {key: (got[key], want[key]) for key in want if got[key] != want[key]}
    assert not wrong, f"(op, actor): (got, expected) — {wrong}"
    # A denial says why, in a message, naming the field.
    for key, value in results.items():
        if isinstance(value, LlmosError):
            assert value.message and value.param, key
    # Listings are filtered to what each may read.
    assert [f["path"] for f in results["file.list", "bob"]] == ["proj/plan.md"]
    assert [f["path"] for f in results["file.list", "proc"]] == ["proj/plan.md"]
    assert {f["path"] for f in results["file.list", "alice"]} == {
        "proj/plan.md",
        "private/diary.md",
    }
    # Every denial (403, and 404 that hides something that exists) was audited.
    denials = sum(1 for v in got.values() if v != OK)
    rows = await world.k.call("audit.list", world.who["admin"], {"outcome": "denied"})
    assert len(rows) == denials
    assert {r["actor"] for r in rows} == {"bob", "carol", "dave", "vera", "alice"}
    assert (await world.k.call("audit.verify", world.who["vera"]))["ok"]


async def test_a_process_can_never_widen_its_rights(world: World) -> None:
    k, proc = world.k, world.who["proc"]
    spawner_caps = {
        "syscalls": ["proc.spawn", "fs.read"],
        "files": {"read": ["proj"]},
        "memory": "read",
    }
    spawner = await k.call(
        "proc.spawn", world.who["alice"], {"name": "spawner", "capabilities": spawner_caps}
    )
    parent = k.authenticate(spawner["token"])
    for spec, param in [
        ({"syscalls": ["fs.write"]}, "capabilities.syscalls"),
        ({"files": {"read": [""]}}, "capabilities.files.read"),
        ({"files": {"read": ["private"]}}, "capabilities.files.read"),
        ({"files": {"write": ["proj"]}}, "capabilities.files.write"),
        ({"memory": "write"}, "capabilities.memory"),
    ]:
        # the reader's capability does not even include proc.spawn
        with pytest.raises(Forbidden) as denied:
            await k.call("proc.spawn", proc, {"name": "child", "capabilities": spec})
        assert denied.value.param == "capabilities"
        with pytest.raises(Forbidden) as denied:
            await k.call("proc.spawn", parent, {"name": "child", "capabilities": spec})
        assert denied.value.param == param
    # Narrower is fine, and the child's token is bound by it.
    child = await k.call(
        "proc.spawn",
        parent,
        {"name": "child", "capabilities": {"syscalls": ["fs.read"], "files": {"read": ["proj"]}}},
    )
    child_caller = k.authenticate(child["token"])
    assert (await k.call("fs.read", child_caller, {"path": "proj/plan.md"}))["content"]
    with pytest.raises(Forbidden):
        await k.call("fs.read", child_caller, {"path": "private/diary.md"})
    with pytest.raises(Forbidden):
        await k.call("proc.spawn", child_caller, {"name": "grandchild"})


async def test_unknown_and_malformed_capabilities_are_400(world: World) -> None:
    alice = world.who["alice"]
    for spec, param in [
        ("all", "capabilities"),
        ({"root": True}, "capabilities"),
        ({"syscalls": ["proc.teleport"]}, "capabilities.syscalls"),
        ({"syscalls": "fs.*"}, "capabilities.syscalls"),
        ({"files": {"read": ["../etc"]}}, "capabilities.files.read"),
        ({"files": ["proj"]}, "capabilities.files"),
        ({"memory": "admin"}, "capabilities.memory"),
        ({"expires_in": -5}, "capabilities.expires_in"),
    ]:
        with pytest.raises(LlmosError) as bad:
            await world.k.call("proc.spawn", alice, {"name": "p", "capabilities": spec})
        assert bad.value.status == 400 and bad.value.param == param, (spec, bad.value)


async def test_hidden_and_missing_look_the_same(world: World) -> None:
    """A 404 for something that exists but is not yours reads exactly like one for
    something that does not exist."""
    dave = world.who["dave"]
    with pytest.raises(Hidden) as hidden:
        await world.k.call("proc.get", dave, {"pid": world.pid})
    with pytest.raises(NotFound) as missing:
        await world.k.call("proc.get", dave, {"pid": 99999})
    assert hidden.value.to_dict() == {
        **missing.value.to_dict(),
        "error": {
            **missing.value.to_dict()["error"],  # type: ignore[dict-item]
            "message": f"no process with pid {world.pid}",
        },
    }
    assert hidden.value.status == missing.value.status == 404


async def test_a_capability_expires_and_a_child_cannot_outlive_its_parent(world: World) -> None:
    import asyncio

    from llmos.errors import Unauthorized

    k, alice = world.k, world.who["alice"]
    short = await k.call(
        "proc.spawn", alice, {"name": "brief", "capabilities": {"expires_in": 0.2}}
    )
    parent = k.authenticate(short["token"])
    child = await k.call(
        "proc.spawn", parent, {"name": "kid", "capabilities": {"expires_in": 3600}}
    )
    assert child["capabilities"]["expires_at"] <= short["capabilities"]["expires_at"]
    await asyncio.sleep(0.3)
    for token in (short["token"], child["token"]):
        with pytest.raises(Unauthorized, match="expired"):
            k.authenticate(token)
