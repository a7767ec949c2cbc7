"""Syscalls of the memory manager: long-term memory (mem.*) and kernel-kept
conversations (conv.*). Thin handlers: validate, scope, call the subsystem."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llmos.errors import InvalidRequest, Killed
from llmos.kernel import access, prompts
from llmos.kernel.request import Request
from llmos.kernel.sysdefs import ALL, READERS, Syscall
from llmos.kernel.tokens import Caller
from llmos.params import MAX_INT
from llmos.types import Snapshot

if TYPE_CHECKING:
    from llmos.kernel.kernel import Kernel


def _str(a: dict[str, Any], key: str, required: bool = True) -> str | None:
    value = a.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequest(f"{key} must be a non-empty string", param=key)
    return value


def _int(a: dict[str, Any], key: str, default: int | None = None, lo: int = 0) -> int:
    value = a.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= MAX_INT:
        raise InvalidRequest(f"{key} must be an integer from {lo} to {MAX_INT}", param=key)
    return value


def _tags(a: dict[str, Any]) -> list[str] | None:
    tags = a.get("tags")
    if tags is None:
        return None
    if not isinstance(tags, list) or not all(isinstance(t, str) and t for t in tags):
        raise InvalidRequest("tags must be a list of non-empty strings", param="tags")
    return tags


def _meta(a: dict[str, Any]) -> dict[str, Any] | None:
    meta = a.get("meta")
    if meta is not None and not isinstance(meta, dict):
        raise InvalidRequest("meta must be an object", param="meta")
    return meta


async def mem_add(k: Kernel, c: Caller, a: dict[str, Any]) -> Any:
    text = _str(a, "text")
    assert text is not None
    scope = access.memory_access(k, c, a, write=True)
    shared = a.get("shared", False)
    if not isinstance(shared, bool):
        raise InvalidRequest("shared must be true or false", param="shared")
    pid: int | None
    if c.pid is not None:  # a process writes its own memories, or shared ones if granted
        if shared and not scope.shared:
            raise InvalidRequest("this process may not write shared memories", param="shared")
        pid = None if shared else c.pid
    else:
        pid = None if a.get("pid") is None else k.visible(c, _int(a, "pid", lo=1)).pid
        if pid is not None and k.procs.get(pid).owner != scope.owner:
            raise InvalidRequest(f"process {pid} does not belong to {scope.owner}", param="pid")
    return k.memory.add(scope.owner, pid, text, _tags(a), _meta(a))


async def mem_search(k: Kernel, c: Caller, a: dict[str, Any]) -> Any:
    query = _str(a, "query")
    assert query is not None
    count = _int(a, "k", 5, lo=1)
    if count > 100:
        raise InvalidRequest("k must be at most 100", param="k")
    tag = _str(a, "tag", required=False)
    return k.memory.search(access.memory_access(k, c, a, False), query, count, tag)


async def mem_get(k: Kernel, c: Caller, a: dict[str, Any]) -> Any:
    mid = _int(a, "id", lo=1)
    scope = access.memory_access(k, c, a, False, mid)
    return access.on_memory(k, c, mid, lambda: k.memory.get(scope, mid))


async def mem_update(k: Kernel, c: Caller, a: dict[str, Any]) -> Any:
    text = _str(a, "text", required=False)
    mid = _int(a, "id", lo=1)
    scope = access.memory_access(k, c, a, True, mid)
    return access.on_memory(
        k, c, mid, lambda: k.memory.update(scope, mid, text, _tags(a), _meta(a))
    )


async def mem_delete(k: Kernel, c: Caller, a: dict[str, Any]) -> Any:
    mid = _int(a, "id", lo=1)
    scope = access.memory_access(k, c, a, True, mid)
    return access.on_memory(k, c, mid, lambda: k.memory.delete(scope, mid))


async def mem_list(k: Kernel, c: Caller, a: dict[str, Any]) -> Any:
    limit = _int(a, "limit", 50, lo=1)
    tag = _str(a, "tag", required=False)
    scope = access.memory_access(k, c, a, False)
    return k.memory.listing(scope, tag, min(limit, 1000), _int(a, "offset", 0))


async def conv_send(k: Kernel, c: Caller, a: dict[str, Any]) -> Request:
    """One turn of a kernel-kept conversation: the client sends only the new turn."""
    pid = _int(a, "pid", lo=1)
    proc = k.visible(c, pid)
    access.require_change(k, c, proc)
    if not proc.state.alive:
        raise Killed(f"process {pid} has ended ({proc.state.name.lower()})", param="pid")
    content = _str(a, "content")
    assert content is not None
    dev = k.device_for(a.get("model") or k.models()[0])
    max_tokens = _int(a, "max_tokens", 256, lo=1)
    if max_tokens > dev.context_length // 2:
        raise InvalidRequest(
            f"max_tokens must leave room for the conversation: at most {dev.context_length // 2}",
            param="max_tokens",
        )
    ids, view = await k.conversations.assemble(dev, proc.owner, pid, content, max_tokens)
    max_tokens = prompts.budget(len(ids), max_tokens, dev.context_length, "content")
    k.conversations.save_view(pid, view)
    snapshot = Snapshot(ids, prompts.sampling(a, max_tokens))
    return k.enqueue(proc, dev, "chat", snapshot, conversation=True)


async def conv_context(k: Kernel, c: Caller, a: dict[str, Any]) -> Any:
    pid = k.visible(c, _int(a, "pid", lo=1)).pid
    view = k.conversations.view(pid)
    return view or {"pid": pid, "parts": [], "note": "no message has been sent yet"}


async def conv_history(k: Kernel, c: Caller, a: dict[str, Any]) -> Any:
    return k.conversations.history(k.visible(c, _int(a, "pid", lo=1)).pid)


async def conv_core(k: Kernel, c: Caller, a: dict[str, Any]) -> Any:
    proc = k.visible(c, _int(a, "pid", lo=1))
    pid = proc.pid
    if "system" in a or "pinned" in a:
        access.require_change(k, c, proc)
        return k.conversations.set_core(pid, a.get("system"), a.get("pinned"))
    return k.conversations.core(pid)


MEM_SYSCALLS = (
    Syscall("mem.add", mem_add, ALL, "store a memory (process-scoped, or shared with its owner)"),
    Syscall(
        "mem.search", mem_search, READERS, "memories by meaning and words (BM25 + vectors, fused)"
    ),
    Syscall("mem.get", mem_get, READERS, "one memory"),
    Syscall("mem.update", mem_update, ALL, "change a memory's text, tags or metadata"),
    Syscall("mem.delete", mem_delete, ALL, "forget a memory"),
    Syscall("mem.list", mem_list, READERS, "memories in scope, newest first"),
    Syscall(
        "conv.send", conv_send, ALL, "append a user turn to a process's conversation and reply"
    ),
    Syscall(
        "conv.context", conv_context, READERS, "what the last prompt of a conversation contained"
    ),
    Syscall("conv.history", conv_history, READERS, "every turn of a conversation"),
    Syscall(
        "conv.core",
        conv_core,
        READERS,
        "get or set a conversation's system prompt and pinned facts",
    ),
)
