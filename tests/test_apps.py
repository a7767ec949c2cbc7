"""Apps on the mock device: /serving/apps and /serving/process, each call a process
of the caller's (scheduled, accounted, ended), the demo data seeded into the `apps`
namespace and replaced through storage, errors in the serving shape, and a
third-party app found through a real `llmos.apps` entry point."""

from __future__ import annotations

import importlib
import json
import textwrap
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

import llmos.api.apphost
from llmos.api import create_app
from llmos.devices import MockDevice
from llmos.errors import Forbidden, Hidden, InvalidRequest, Killed
from llmos.kernel import Kernel
from llmos.params import Settings

ADMIN = "apps-admin"
KB = "apps/customer_service/kb.jsonl"
CATALOGUE = "apps/recommendation/catalogue.json"


@dataclass
class Env:
    kernel: Kernel
    device: MockDevice
    http: httpx.AsyncClient  # as admin
    tokens: dict[str, str]  # user -> token

    def app(self) -> httpx.AsyncClient:
        """A second HTTP app on the same kernel (a restart of the API: a new host)."""
        transport = httpx.ASGITransport(app=create_app(self.kernel, manage_kernel=False))
        return httpx.AsyncClient(transport=transport, base_url="http://llmos", headers=_auth(ADMIN))

    async def serve(self, user: str, body: Any) -> httpx.Response:
        return await self.http.post("/serving/process", json=body, headers=_auth(self.tokens[user]))

    async def serve_as(self, token: str, name: str) -> httpx.Response:
        return await self.http.post("/serving/process", json={"name": name}, headers=_auth(token))

    async def ok(self, user: str, name: str, value: Any = None) -> dict[str, Any]:
        body = {"name": name} if value is None else {"name": name, "input": value}
        r = await self.serve(user, body)
        assert r.status_code == 200, r.text
        answer: dict[str, Any] = r.json()
        assert answer["status"] == "success" and answer["app"] in {
            "customer_service",
            "recommendation_system",
            "summarize",
            "echo",
        }
        return answer

    async def put(self, user: str, path: str, content: str, owner: str | None = None) -> None:
        args: dict[str, Any] = {"path": path, "content": content}
        if owner is not None:
            args["owner"] = owner
        caller = self.kernel.authenticate(self.tokens[user])
        await self.kernel.call("fs.write", caller, args)


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest_asyncio.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    device = MockDevice(slots=2, context_length=4096)
    settings = Settings(home=tmp_path, admin_token=ADMIN, max_body_bytes=256 * 1024)
    kernel = Kernel(settings, [device])
    await kernel.start()
    admin = kernel.authenticate(ADMIN)
    tokens = {"admin": ADMIN}
    for name, role in (("alice", "user"), ("bob", "user"), ("vera", "viewer")):
        tokens[name] = (await kernel.call("user.add", admin, {"name": name, "role": role}))["token"]
    transport = httpx.ASGITransport(app=create_app(kernel, manage_kernel=False))
    async with httpx.AsyncClient(
        transport=transport, base_url="http://llmos", headers=_auth(ADMIN)
    ) as http:
        yield Env(kernel, device, http, tokens)
    await kernel.stop()


# -- listing -----------------------------------------------------------------------
async def test_the_apps_are_listed_with_their_input_schemas(env: Env) -> None:
    r = await env.http.get("/serving/apps", headers=_auth(env.tokens["vera"]))  # any role
    assert r.status_code == 200, r.text
    apps = {a["name"]: a for a in r.json()["data"]}
    assert list(apps) == ["customer_service", "recommendation_system", "summarize"]
    assert apps["recommendation_system"]["aliases"] == ["recommendation"]
    assert apps["recommendation_system"]["input_schema"]["properties"]["k"]["type"] == "integer"
    assert {a["source"] for a in apps.values()} == {"llmos"}
    assert apps["summarize"]["needs_input"] and not apps["customer_service"]["needs_input"]
    assert "llm.chat" in apps["customer_service"]["syscalls"]
    assert apps["recommendation_system"]["syscalls"] == ["fs.read"]


# -- customer_service ----------------------------------------------------------------
async def test_customer_service_answers_from_the_kb_with_citations(env: Env) -> None:
    answer = await env.ok("alice", "customer_service", "How do I reset my password?")
    result = answer["result"]
    assert result["grounded"] is True
    assert result["citations"][0]["id"] == "password-reset"
    assert result["citations"][0]["title"] == "Resetting your password"
    assert result["citations"][0]["score"] > 0
    assert result["answer"]  # the mock's text: any non-empty reply
    assert result["knowledge_base"] == {"path": KB, "owner": "apps", "version": 1}
    assert answer["usage"]["requests"] == 1 and answer["usage"]["completion_tokens"] > 0
    # The object form, with k.
    answer = await env.ok(
        "alice", "customer_service", {"question": "express shipping cost", "k": 1}
    )
    assert [c["id"] for c in answer["result"]["citations"]] == ["shipping-costs"]


async def test_customer_service_greets_and_admits_what_it_does_not_know(env: Env) -> None:
    greeting = (await env.ok("alice", "customer_service"))["result"]
    assert greeting["answer"].startswith("Hello!")
    assert "Resetting your password" in greeting["topics"] and len(greeting["topics"]) == 14
    unknown = await env.ok("alice", "customer_service", "What is the weather on Mars?")
    assert unknown["result"]["grounded"] is False and unknown["result"]["citations"] == []
    assert "do not know" in unknown["result"]["answer"]
    assert unknown["usage"]["requests"] == 0  # no model call: nothing to hallucinate from


async def test_each_call_is_an_accounted_process_of_the_caller(env: Env) -> None:
    answer = await env.ok("alice", "customer_service", "Can I pay with bitcoin?")
    alice = _auth(env.tokens["alice"])
    proc = (await env.http.get(f"/v1/processes/{answer['pid']}", headers=alice)).json()
    assert proc["name"] == "app:customer_service" and proc["owner"] == "alice"
    assert proc["state"] == "exited" and proc["priority"] == 24
    assert proc["requests"] == 1
    assert proc["tokens_in"] == answer["usage"]["prompt_tokens"] > 0
    assert proc["tokens_out"] == answer["usage"]["completion_tokens"] > 0
    # bob does not see alice's app process; the spawn is in the audit log as hers
    bob = _auth(env.tokens["bob"])
    assert (await env.http.get(f"/v1/processes/{answer['pid']}", headers=bob)).status_code == 404
    rows = (await env.http.get("/v1/audit", params={"limit": 100})).json()["data"]
    assert any(r["action"] == "proc.spawn" and r["actor"] == "alice" for r in rows)


async def test_a_calling_process_bounds_the_app_process(env: Env) -> None:
    alice = env.kernel.authenticate(env.tokens["alice"])
    low = await env.kernel.call("proc.spawn", alice, {"name": "agent", "priority": 5})
    answer = (await env.serve_as(low["token"], "recommendation")).json()
    proc = env.kernel.procs.get(answer["pid"])
    assert proc.priority == 5 and proc.owner == "alice"  # never above its parent
    narrow = await env.kernel.call(
        "proc.spawn", alice, {"name": "n", "capabilities": {"syscalls": ["proc.spawn"]}}
    )
    r = await env.serve_as(narrow["token"], "customer_service")
    assert r.status_code == 403, r.text
    assert r.json()["status"] == "error"
    assert r.json()["error"]["param"] == "capabilities.syscalls"


# -- data in storage -----------------------------------------------------------------
async def test_the_demo_data_is_seeded_once_into_the_apps_namespace(env: Env) -> None:
    await env.http.get("/serving/apps")
    files = (await env.http.get("/v1/files", params={"owner": "apps"})).json()["data"]
    assert {f["path"] for f in files} == {KB, CATALOGUE}
    catalogue = json.loads((await env.http.get(f"/v1/files/{CATALOGUE}?owner=apps")).text)
    assert len(catalogue["items"]) >= 30
    # A user cannot write the shared data; an admin replaces it for everyone, and a
    # new host (an API restart) does not seed over the edit, nor over a deletion.
    with pytest.raises(Hidden):
        await env.put("alice", KB, "{}", owner="apps")
    own_kb = {"id": "hours", "title": "Opening hours", "text": "The shop opens at 9 am."}
    await env.put("admin", KB, json.dumps(own_kb), owner="apps")
    await env.http.delete(f"/v1/files/{CATALOGUE}?owner=apps")
    async with env.app() as restarted:
        r = await restarted.post(
            "/serving/process", json={"name": "customer_service", "input": "When do you open?"}
        )
        assert r.json()["result"]["citations"][0]["id"] == "hours"
        assert r.json()["result"]["knowledge_base"]["version"] == 2
        r = await restarted.post("/serving/process", json={"name": "recommendation"})
        assert r.status_code == 400 and r.json()["error"]["param"] == CATALOGUE
        assert "no catalogue" in r.json()["error"]["message"]


async def test_a_users_own_kb_replaces_the_shared_one_for_them(env: Env) -> None:
    before = await env.ok("alice", "customer_service", "Do you have a loyalty programme?")
    assert before["result"]["grounded"] is False
    entries = [
        {"id": "loyalty", "title": "Loyalty programme", "text": "Every 10th order is free."},
        {"id": "parking", "title": "Parking", "text": "Free parking behind the shop."},
    ]
    await env.put("alice", KB, "\n".join(json.dumps(e) for e in entries) + "\n")
    after = (await env.ok("alice", "customer_service", "Do you have a loyalty programme?"))[
        "result"
    ]
    assert after["grounded"] is True
    assert [c["id"] for c in after["citations"]] == ["loyalty"]
    assert after["knowledge_base"] == {"path": KB, "owner": "alice", "version": 1}
    # bob still gets the shared knowledge base
    bob = (await env.ok("bob", "customer_service", "How do I reset my password?"))["result"]
    assert bob["citations"][0]["id"] == "password-reset"
    assert bob["knowledge_base"]["owner"] == "apps"


async def test_a_broken_kb_or_catalogue_is_a_clear_400(env: Env) -> None:
    await env.put("alice", KB, '{"id": "a", "title": "A", "text": "fine"}\n{oops\n')
    r = await env.serve("alice", {"name": "customer_service", "input": "hello there"})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == KB and error["code"] == "invalid_app_data"
    assert "alice's" in error["message"] and "line 2" in error["message"]
    await env.put("alice", KB, '{"id": "a", "title": "A"}\n')
    r = await env.serve("alice", {"name": "customer_service"})
    assert r.status_code == 400 and "text must be non-empty" in r.json()["error"]["message"]
    await env.put("alice", CATALOGUE, json.dumps({"items": [{"id": "x", "title": "X"}] * 2}))
    r = await env.serve("alice", {"name": "recommendation"})
    assert r.status_code == 400 and "used twice" in r.json()["error"]["message"]


# -- recommendation_system -------------------------------------------------------------
async def test_recommendations_are_ranked_with_reasons_and_deterministic(env: Env) -> None:
    popular = (await env.ok("alice", "recommendation_system"))["result"]
    assert popular["strategy"] == "popularity" and len(popular["items"]) == 5
    assert popular["items"][0]["id"] == "dune"  # the most popular
    scores = [i["score"] for i in popular["items"]]
    assert scores == sorted(scores, reverse=True)
    assert popular["items"][0]["reason"] == "popular: #1 in the catalogue"

    value = {"history": ["dune", "Foundation"], "k": 4}
    first = (await env.ok("alice", "recommendation", value))["result"]
    assert first == (await env.ok("alice", "recommendation", value))["result"]
    ids = [i["id"] for i in first["items"]]
    assert first["strategy"] == "content+popularity" and len(ids) == 4
    assert "dune" not in ids and "foundation" not in ids  # never what they already have
    assert all(i["reason"] for i in first["items"])
    assert sum("science fiction" in i["tags"] for i in first["items"]) >= 2
    top = first["items"][0]
    assert "which you liked" in top["reason"] and "shared tags" in top["reason"]

    interest = await env.ok("alice", "recommendation", {"history": ["space opera"], "k": 1})
    assert interest["result"]["items"][0]["id"] == "hyperion"
    assert "space opera" in interest["result"]["items"][0]["reason"]


async def test_a_users_profile_joins_the_history(env: Env) -> None:
    await env.put("alice", "apps/recommendation/users/ann.json", json.dumps(["The Hobbit"]))
    result = (await env.ok("alice", "recommendation", {"user": "ann", "k": 3}))["result"]
    assert result["user"] == "ann" and result["strategy"] == "content+popularity"
    ids = [i["id"] for i in result["items"]]
    assert "hobbit" not in ids and "lotr" in ids
    # bob keeps no profile for ann: popular items
    assert (await env.ok("bob", "recommendation", {"user": "ann"}))["result"]["strategy"] == (
        "popularity"
    )


# -- summarize -----------------------------------------------------------------------
async def test_summarize_map_reduces_a_long_text_within_the_context(env: Env) -> None:
    text = "\n\n".join(
        " ".join(f"Paragraph {p} sentence {s} says something." for s in range(12))
        for p in range(40)
    )
    answer = await env.ok("alice", "summarize", {"text": text, "max_words": 30})
    result = answer["result"]
    assert result["chunks"] > 1 and result["rounds"] >= 2
    assert 0 < result["words_out"] <= 30 < result["words_in"]
    assert answer["usage"]["requests"] >= result["chunks"]
    proc = env.kernel.procs.get(answer["pid"])
    assert proc.requests == answer["usage"]["requests"] and proc.priority == 16
    short = (await env.ok("alice", "summarize", "A short text to summarize."))["result"]
    assert short["chunks"] == 1 and short["rounds"] == 1


async def test_summarize_without_input_is_refused_before_any_process(env: Env) -> None:
    before = len(env.kernel.procs.list())
    r = await env.serve("alice", {"name": "summarize"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "input"
    assert len(env.kernel.procs.list()) == before


async def test_an_app_past_its_time_is_stopped_and_its_process_killed(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(llmos.api.apphost, "APP_TIMEOUT_S", 0.3)
    env.device.token_delay = 0.05  # 200 tokens: 10 s
    r = await env.serve(
        "alice", {"name": "summarize", "input": {"text": "x " * 50, "max_words": 90}}
    )
    assert r.status_code == 504, r.text
    assert r.json()["error"]["code"] == "request_timeout"
    proc = [p for p in env.kernel.procs.list() if p.name == "app:summarize"][-1]
    assert proc.state.name == "EXITED" and proc.exit_code == 124  # as timeout(1)
    for request in list(env.kernel.live.get(proc.pid, ())):  # cancelled with it
        assert isinstance((await request.outcome()).error, Killed)


# -- errors ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"name": "nope"}, 404, "name"),
        ({}, 400, "name"),
        ({"name": 3}, 400, "name"),
        ({"name": "summarize", "inputs": "x"}, 400, "inputs"),
        ([1, 2], 400, "body"),
        ({"name": "recommendation", "input": {"k": 0}}, 400, "input.k"),
        ({"name": "recommendation", "input": {"history": [7]}}, 400, "input.history[0]"),
        ({"name": "recommendation", "input": {"user": "../x"}}, 400, "input.user"),
        ({"name": "customer_service", "input": 42}, 400, "input"),
        ({"name": "summarize", "input": {"text": "x", "max_words": 5}}, 400, "input.max_words"),
    ],
)
async def test_bad_calls_are_4xx_in_the_serving_shape(
    env: Env, body: Any, status: int, param: str
) -> None:
    r = await env.serve("alice", body)
    assert r.status_code == status, r.text
    out = r.json()
    assert out["status"] == "error" and out["error"]["param"] == param
    assert set(out["error"]) == {"message", "type", "param", "code"}


async def test_an_unknown_app_lists_the_apps(env: Env) -> None:
    r = await env.serve("alice", {"name": "weather"})
    assert r.status_code == 404
    assert r.json()["apps"] == ["customer_service", "recommendation_system", "summarize"]
    assert "customer_service" in r.json()["error"]["message"]


async def test_auth_body_and_role_errors_keep_the_shape(env: Env) -> None:
    for headers in ({"Authorization": ""}, _auth("not-a-token")):
        r = await env.http.post("/serving/process", json={"name": "summarize"}, headers=headers)
        assert r.status_code == 401 and r.json()["status"] == "error"
        r = await env.http.get("/serving/apps", headers=headers)
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    r = await env.http.post("/serving/process", content=b'{"name": ')
    assert r.status_code == 400 and r.json()["error"]["param"] == "body"
    big = {"name": "summarize", "input": "y" * 300_000}
    r = await env.http.post("/serving/process", json=big)  # refused by its Content-Length
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"
    r = await env.serve("vera", {"name": "recommendation"})  # a viewer runs nothing
    assert r.status_code == 403 and r.json()["error"]["param"] == "authorization"


# -- a third-party app -------------------------------------------------------------------
PLUGIN = """
from llmos.apps import App


class Echo(App):
    name = "echo"
    aliases = ("parrot",)
    description = "Says back what it is told."
    input_schema = {"type": "string", "maxLength": 100}
    priority = 7
    syscalls = ("sys.info",)

    async def default(self, ctx):
        return {"said": None, "owner": ctx.owner}

    async def run(self, ctx, input):
        if input == "write":  # outside its capability
            await ctx.call("fs.write", {"path": "apps/x", "content": "x"})
        info = await ctx.call("sys.info")
        return {"said": input, "models": info["models"], "pid": ctx.pid}


class Clash(Echo):
    name = "summarize"
    aliases = ()
"""


def _install_plugin(site: Path) -> None:
    """A real installed distribution: a module and a dist-info with entry points."""
    site.mkdir()
    (site / "echo_plugin.py").write_text(textwrap.dedent(PLUGIN))
    info = site / "echo_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: echo-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[llmos.apps]\n"
        "echo = echo_plugin:Echo\n"
        "clash = echo_plugin:Clash\n"
        "broken = no_such_module_anywhere:App\n"
    )
    importlib.invalidate_caches()


async def test_a_third_party_app_registers_through_an_entry_point(
    env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _install_plugin(tmp_path / "site")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    async with env.app() as http:
        apps = {a["name"]: a for a in (await http.get("/serving/apps")).json()["data"]}
        assert set(apps) == {"customer_service", "echo", "recommendation_system", "summarize"}
        assert apps["echo"]["source"] == "echo-plugin" and apps["echo"]["aliases"] == ["parrot"]
        assert apps["summarize"]["source"] == "llmos"  # the clash lost; the broken one is skipped
        r = await http.post("/serving/process", json={"name": "parrot", "input": "hi"})
        assert r.status_code == 200, r.text
        assert r.json()["result"] == {"said": "hi", "models": ["mock"], "pid": r.json()["pid"]}
        assert env.kernel.procs.get(r.json()["pid"]).priority == 7
        r = await http.post("/serving/process", json={"name": "echo"})
        assert r.json()["result"] == {"said": None, "owner": "admin"}
        r = await http.post("/serving/process", json={"name": "echo", "input": "write"})
        assert r.status_code == 403 and r.json()["error"]["param"] == "capabilities"
        ended = [p for p in env.kernel.procs.list() if p.name == "app:echo"]
        assert [p.state.name for p in ended] == ["EXITED", "EXITED", "EXITED"]
        r = await http.post("/serving/process", json={"name": "echo", "input": "x" * 101})
        assert r.status_code == 400 and r.json()["error"]["param"] == "input"


# -- proc.exit ---------------------------------------------------------------------------
async def test_a_process_exits_itself_with_a_code(env: Env) -> None:
    alice = env.kernel.authenticate(env.tokens["alice"])
    spawned = await env.kernel.call("proc.spawn", alice, {"name": "job"})
    me = env.kernel.authenticate(spawned["token"])
    with pytest.raises(InvalidRequest) as bad:
        await env.kernel.call("proc.exit", me, {"code": 256})
    assert bad.value.param == "code"
    ended = await env.kernel.call("proc.exit", me, {"code": 3})
    assert ended["state"] == "exited" and ended["exit_code"] == 3
    assert (await env.kernel.call("proc.exit", me))["exit_code"] == 3  # once over, stays so
    with pytest.raises(Killed):  # an ended process's token does nothing more
        await env.kernel.call("fs.read", me, {"path": "x"})
    with pytest.raises(Forbidden):  # users end processes with proc.kill
        await env.kernel.call("proc.exit", alice)


async def test_a_process_exiting_cancels_its_requests_in_flight(env: Env) -> None:
    env.device.token_delay = 0.05
    alice = env.kernel.authenticate(env.tokens["alice"])
    spawned = await env.kernel.call("proc.spawn", alice, {"name": "busy"})
    me = env.kernel.authenticate(spawned["token"])
    chat = {"model": "mock", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 200}
    request = await env.kernel.call("llm.chat", me, chat)
    ended = await env.kernel.call("proc.exit", me, {"code": 1})
    assert ended["state"] == "exited" and ended["exit_code"] == 1
    done = await request.outcome()
    assert isinstance(done.error, Killed)


async def test_answers_fit_the_models_context(env: Env) -> None:
    filler = " ".join(f"loyalty filler sentence number {n}." for n in range(200))
    entries = [
        {"id": "short", "title": "Loyalty programme", "text": "Every 10th order is free."},
        {"id": "long", "title": "Loyalty programme history", "text": filler},
    ]
    await env.put("alice", KB, "\n".join(json.dumps(e) for e in entries))
    answer = await env.ok("alice", "customer_service", "loyalty programme")
    cited = [c["id"] for c in answer["result"]["citations"]]
    assert cited == ["short"]  # the long entry did not fit beside it: not cited
    await env.put("alice", KB, json.dumps(entries[1]))  # alone, it is cut to fit
    answer = await env.ok("alice", "customer_service", "loyalty history")
    assert [c["id"] for c in answer["result"]["citations"]] == ["long"]
    assert 2000 < answer["usage"]["prompt_tokens"] < 4096 - 80
    env.device.context_length = 1000  # a question of 1900 leaves no room for an entry
    r = await env.serve("alice", {"name": "customer_service", "input": "loyalty " * 237})
    assert r.status_code == 400 and r.json()["error"]["param"] == "input"
    assert "context of 1000 tokens" in r.json()["error"]["message"]
    env.device.context_length = 300  # pieces of 64 characters fit: far too many
    r = await env.serve("alice", {"name": "summarize", "input": {"text": filler, "max_words": 400}})
    assert r.status_code == 400 and r.json()["error"]["param"] == "input"
    assert "at most 64" in r.json()["error"]["message"]
    env.device.context_length = 200  # not even those
    r = await env.serve(
        "alice", {"name": "summarize", "input": {"text": "x" * 100, "max_words": 400}}
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == "input.max_words", r.text
