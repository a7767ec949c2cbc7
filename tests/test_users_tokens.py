"""Users, roles and API tokens: create, list, revoke, expiry; role changes and
removals take effect at once; bad input is a 4xx naming the field — over HTTP, in
the SDK and in the CLI."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from llmos.cli.main import build_app
from llmos.devices import MockDevice
from llmos.errors import Forbidden, InvalidRequest, Unauthorized
from llmos.kernel import Kernel
from llmos.params import Settings
from llmos.sdk import ApiError, Client
from tests._live_server import LiveServer


async def boot(home: Path) -> Kernel:
    k = Kernel(Settings(home=home, admin_token="adm"), [MockDevice(slots=1)])
    await k.start()
    return k


async def test_tokens_create_list_revoke_and_expire(tmp_path: Path) -> None:
    k = await boot(tmp_path)
    admin = k.authenticate("adm")
    alice_token = (await k.call("user.add", admin, {"name": "alice"}))["token"]
    alice = k.authenticate(alice_token)
    made = await k.call("token.create", alice, {"name": "laptop", "expires_in": 3600})
    assert made["owner"] == "alice" and made["name"] == "laptop"
    assert 3500 < made["expires_at"] - time.time() <= 3600
    laptop = k.authenticate(made["token"])
    assert (laptop.owner, laptop.role) == ("alice", "user")
    listed = await k.call("token.list", alice)
    assert {t["name"] for t in listed} == {"first token", "laptop"}
    assert all("hash" not in t and "salt" not in t and "token" not in t for t in listed)
    await k.call("token.revoke", alice, {"id": made["id"]})
    with pytest.raises(Unauthorized):
        k.authenticate(made["token"])
    # An expired token is refused with a message that says so.
    old, _ = k.tokens.issue("alice", "user", expires_at=time.time() - 1)
    with pytest.raises(Unauthorized, match="expired"):
        k.authenticate(old)
    # Only an admin reaches other users' tokens.
    bob = k.authenticate((await k.call("user.add", admin, {"name": "bob"}))["token"])
    with pytest.raises(Forbidden):
        await k.call("token.create", bob, {"user": "alice"})
    with pytest.raises(Forbidden):
        await k.call("token.revoke", bob, {"id": alice.token_id})
    with pytest.raises(Forbidden):
        await k.call("token.list", bob, {"user": "alice"})
    for_bob = await k.call("token.create", admin, {"user": "bob"})
    assert k.authenticate(for_bob["token"]).owner == "bob"
    for args, param in [
        ({"expires_in": 0}, "expires_in"),
        ({"expires_in": "soon"}, "expires_in"),
        ({"user": "Not A Name"}, "user"),
        ({"user": "nobody"}, "user"),
        ({"name": 5}, "name"),
    ]:
        with pytest.raises(InvalidRequest) as bad:
            await k.call("token.create", admin, args)
        assert bad.value.param == param, args
    await k.stop()


async def test_roles_change_and_removal_take_effect_at_once(tmp_path: Path) -> None:
    k = await boot(tmp_path)
    admin = k.authenticate("adm")
    token = (await k.call("user.add", admin, {"name": "carol", "groups": ["ops"]}))["token"]
    carol = k.authenticate(token)
    assert carol.groups == frozenset({"ops"})
    await k.call("fs.write", carol, {"path": "a.txt", "content": "x"})
    pid = (await k.call("proc.spawn", carol, {"name": "worker"}))["pid"]
    await k.call("user.update", admin, {"name": "carol", "role": "viewer"})
    carol = k.authenticate(token)  # same token, new role
    assert carol.role == "viewer"
    with pytest.raises(Forbidden):
        await k.call("fs.write", carol, {"path": "a.txt", "content": "y"})
    assert (await k.call("fs.read", carol, {"path": "a.txt"}))["content"] == "x"
    await k.call("user.rm", admin, {"name": "carol"})
    with pytest.raises(Unauthorized):
        k.authenticate(token)
    assert k.procs.get(pid).state.name == "KILLED"
    with pytest.raises(Forbidden):  # the bootstrap admin stays
        await k.call("user.rm", admin, {"name": "admin"})
    for args, param in [
        ({"name": "x y"}, "name"),
        ({"name": "dan", "role": "root"}, "role"),
        ({"name": "dan", "groups": "eng"}, "groups"),
        ({"name": "admin"}, "name"),  # exists
    ]:
        with pytest.raises(InvalidRequest) as bad:
            await k.call("user.add", admin, args)
        assert bad.value.param == param, args
    await k.stop()


def test_users_and_tokens_over_http_sdk_and_cli(server: LiveServer) -> None:
    runner = CliRunner()
    base = ["--url", server.url, "--token", server.token]
    out = runner.invoke(build_app(), ["user", "add", "dora", "--group", "eng", *base])
    assert out.exit_code == 0, out.output
    dora_token = out.output.strip().splitlines()[-1]
    with Client(server.url, dora_token) as dora:
        me = dora.whoami()
        assert (me["owner"], me["role"], me["groups"]) == ("dora", "user", ["eng"])
        made = dora.create_token(name="ci", expires_in=60)
        assert made["token"].startswith("llmos-")
        with pytest.raises(ApiError) as denied:
            dora.add_user("eve")
        assert denied.value.status == 403
    ls = runner.invoke(build_app(), ["token", "ls", "--url", server.url, "--token", dora_token])
    assert ls.exit_code == 0 and "ci" in ls.output and made["id"] in ls.output
    rv = runner.invoke(build_app(), ["token", "revoke", made["id"], *base])
    assert rv.exit_code == 0, rv.output
    users = runner.invoke(build_app(), ["user", "ls", *base])
    assert users.exit_code == 0 and "dora" in users.output and "eng" in users.output
    bad = runner.invoke(build_app(), ["user", "add", "Bad Name", *base])
    assert bad.exit_code == 1 and "name must be" in bad.output
    neg = runner.invoke(build_app(), ["token", "create", "--expires", "-1", *base])
    assert neg.exit_code == 2 and "--expires" in neg.output
    rm = runner.invoke(build_app(), ["user", "rm", "dora", *base])
    assert rm.exit_code == 0
    r = httpx.get(server.url + "/v1/auth/whoami", headers={"Authorization": f"Bearer {dora_token}"})
    assert r.status_code == 401
    for body, param in [
        ({"name": "x", "role": "root"}, "role"),
        ({"name": "x", "extra": 1}, "extra"),
        ({"role": "user"}, "name"),
    ]:
        r = httpx.post(
            server.url + "/v1/users",
            json=body,
            headers={"Authorization": f"Bearer {server.token}"},
        )
        assert r.status_code == 400 and param in (r.json()["error"]["param"] or ""), r.text


def test_sharing_over_http_and_the_cli(server: LiveServer) -> None:
    runner = CliRunner()
    base = ["--url", server.url, "--token", server.token]
    tokens = {}
    for name in ("olga", "pete"):
        out = runner.invoke(build_app(), ["user", "add", name, *base])
        assert out.exit_code == 0, out.output
        tokens[name] = out.output.strip().splitlines()[-1]
    olga = ["--url", server.url, "--token", tokens["olga"]]
    pete = {"Authorization": f"Bearer {tokens['pete']}"}
    with Client(server.url, tokens["olga"]) as c:
        c.fs_write("shared/a.txt", "for pete")
        c.fs_write("mine/b.txt", "for me")
    url = server.url + "/v1/files/shared/a.txt?owner=olga"
    r = httpx.get(url, headers=pete)
    assert r.status_code == 404 and r.json()["error"]["param"] == "path"
    added = runner.invoke(
        build_app(), ["share", "add", "file", "shared", "--with", "user:pete", *olga]
    )
    assert added.exit_code == 0, added.output
    share_id = added.output.split()[1].rstrip(":")
    r = httpx.get(url, headers=pete)
    assert r.status_code == 200 and r.content == b"for pete"
    r = httpx.put(url, content=b"changed", headers=pete)
    assert r.status_code == 403 and "read-only" in r.json()["error"]["message"]
    r = httpx.get(server.url + "/v1/files/mine/b.txt?owner=olga", headers=pete)
    assert r.status_code == 404
    listed = httpx.get(server.url + "/v1/files?owner=olga", headers=pete).json()["data"]
    assert [f["path"] for f in listed] == ["shared/a.txt"]
    ls = runner.invoke(build_app(), ["share", "ls", "--url", server.url, "--token", tokens["pete"]])
    assert ls.exit_code == 0 and "user:pete" in ls.output
    bad = runner.invoke(build_app(), ["share", "add", "file", "x", "--with", "pete", *olga])
    assert bad.exit_code == 1 and "principal" in bad.output
    rm = runner.invoke(build_app(), ["share", "rm", share_id, *olga])
    assert rm.exit_code == 0, rm.output
    assert httpx.get(url, headers=pete).status_code == 404
