"""The public surface changes only on purpose: package exports, syscalls, routes."""

from __future__ import annotations

import llmos
from llmos.api import create_app
from llmos.devices import MockDevice
from llmos.kernel import SYSCALLS, Kernel
from llmos.params import Settings


def test_package_exports() -> None:
    assert sorted(llmos.__all__) == ["LlmosError", "Settings"]


def test_syscall_table() -> None:
    assert sorted(SYSCALLS) == [
        "audit.list",
        "audit.verify",
        "auth.whoami",
        "conv.context",
        "conv.core",
        "conv.history",
        "conv.send",
        "fs.delete",
        "fs.list",
        "fs.read",
        "fs.rollback",
        "fs.search",
        "fs.stat",
        "fs.versions",
        "fs.write",
        "job.cancel",
        "job.get",
        "job.list",
        "job.submit",
        "key.rotate",
        "key.status",
        "llm.chat",
        "llm.chat_tools",
        "llm.complete",
        "mcp.add",
        "mcp.list",
        "mcp.remove",
        "mcp.restart",
        "mem.add",
        "mem.delete",
        "mem.get",
        "mem.list",
        "mem.search",
        "mem.update",
        "proc.exec",
        "proc.exit",
        "proc.get",
        "proc.kill",
        "proc.list",
        "proc.logs",
        "proc.renice",
        "proc.signal",
        "proc.spawn",
        "proc.wait",
        "sched.get",
        "sched.set",
        "share.add",
        "share.list",
        "share.rm",
        "sys.devices",
        "sys.history",
        "sys.info",
        "sys.models",
        "sys.top",
        "telemetry.export",
        "token.create",
        "token.list",
        "token.revoke",
        "tool.call",
        "tool.list",
        "user.add",
        "user.list",
        "user.rm",
        "user.update",
    ]


def test_http_routes(tmp_path) -> None:  # type: ignore[no-untyped-def]
    kernel = Kernel(Settings(home=tmp_path), [MockDevice()])
    schema = create_app(kernel).openapi()
    kernel.store.close()
    paths = {(m.upper(), p) for p, ops in schema["paths"].items() for m in ops}
    assert paths == {
        ("POST", "/v1/chat/completions"),
        ("POST", "/v1/completions"),
        ("GET", "/v1/models"),
        ("GET", "/v1/models/{model_id}"),
        ("GET", "/v1/processes"),
        ("POST", "/v1/processes"),
        ("GET", "/v1/processes/{pid}"),
        ("DELETE", "/v1/processes/{pid}"),
        ("POST", "/v1/processes/{pid}/renice"),
        ("GET", "/v1/sys/top"),
        ("GET", "/v1/sys/history"),
        ("POST", "/v1/processes/exec"),
        ("GET", "/v1/processes/{pid}/logs"),
        ("POST", "/v1/processes/{pid}/signal"),
        ("POST", "/v1/processes/{pid}/wait"),
        ("GET", "/v1/sys/info"),
        ("GET", "/v1/sys/devices"),
        ("GET", "/v1/sys/scheduler"),
        ("PUT", "/v1/sys/scheduler"),
        ("GET", "/v1/sys/key"),
        ("POST", "/v1/sys/key/rotate"),
        ("GET", "/v1/telemetry/export"),
        ("POST", "/v1/memories"),
        ("GET", "/v1/memories"),
        ("POST", "/v1/memories/search"),
        ("GET", "/v1/memories/{mid}"),
        ("PATCH", "/v1/memories/{mid}"),
        ("DELETE", "/v1/memories/{mid}"),
        ("POST", "/v1/processes/{pid}/messages"),
        ("GET", "/v1/processes/{pid}/messages"),
        ("GET", "/v1/processes/{pid}/context"),
        ("GET", "/v1/processes/{pid}/core"),
        ("PUT", "/v1/processes/{pid}/core"),
        ("GET", "/v1/auth/whoami"),
        ("GET", "/v1/users"),
        ("POST", "/v1/users"),
        ("PATCH", "/v1/users/{name}"),
        ("DELETE", "/v1/users/{name}"),
        ("GET", "/v1/tokens"),
        ("POST", "/v1/tokens"),
        ("DELETE", "/v1/tokens/{token_id}"),
        ("GET", "/v1/shares"),
        ("POST", "/v1/shares"),
        ("DELETE", "/v1/shares/{share_id}"),
        ("GET", "/v1/audit"),
        ("GET", "/v1/audit/verify"),
        ("GET", "/v1/mcp"),
        ("POST", "/v1/mcp"),
        ("POST", "/v1/mcp/{name}/restart"),
        ("DELETE", "/v1/mcp/{name}"),
        ("GET", "/v1/syscalls"),
        ("POST", "/v1/syscalls/{name}"),
        ("GET", "/v1/tools"),
        ("POST", "/v1/tools/{name}/call"),
        ("GET", "/v1/files"),
        ("PUT", "/v1/files/{path}"),
        ("GET", "/v1/files/{path}"),
        ("DELETE", "/v1/files/{path}"),
        ("GET", "/v1/files-meta/{path}"),
        ("GET", "/v1/files-versions/{path}"),
        ("POST", "/v1/files-rollback/{path}"),
        ("GET", "/v1/files-search"),
        ("POST", "/v1/jobs"),
        ("GET", "/v1/jobs"),
        ("GET", "/v1/jobs/{job_id}"),
        ("DELETE", "/v1/jobs/{job_id}"),
        ("GET", "/serving/apps"),
        ("POST", "/serving/process"),
        ("GET", "/healthz"),
        ("GET", "/metrics"),
    }


def test_policy_names_match_the_registry() -> None:
    from llmos.kernel.policies import POLICIES
    from llmos.params import POLICY_NAMES

    assert sorted(POLICIES) == sorted(POLICY_NAMES)
