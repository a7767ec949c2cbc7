"""Apps from the SDK (sync and async) and the CLI (`llmos app ls`, `llmos app call`),
against a live kernel on the mock device."""

from __future__ import annotations

import json

import pytest
from click.testing import Result
from typer.testing import CliRunner

from llmos.cli.main import build_app
from llmos.sdk import ApiError, AsyncClient, Client
from tests._live_server import LiveServer


def against(server: LiveServer, *args: str, stdin: str | None = None) -> Result:
    argv = [*args, "--url", server.url, "--token", server.token]
    return CliRunner().invoke(build_app(), argv, input=stdin)


def test_the_sdk_lists_and_serves_apps(client: Client) -> None:
    apps = {a["name"]: a for a in client.apps()}
    assert set(apps) == {"customer_service", "recommendation_system", "summarize"}
    answer = client.serve("customer_service", "How do I reset my password?")
    assert answer["status"] == "success" and answer["app"] == "customer_service"
    assert answer["result"]["citations"][0]["id"] == "password-reset"
    assert client.process(answer["pid"])["state"] == "exited"
    greeting = client.serve("customer_service")["result"]
    assert greeting["answer"].startswith("Hello!") and greeting["citations"] == []
    ranked = client.serve("recommendation", {"history": ["dune"], "k": 2})["result"]["items"]
    assert len(ranked) == 2 and all(i["reason"] for i in ranked)


def test_sdk_errors_name_the_field(client: Client) -> None:
    with pytest.raises(ApiError) as unknown:
        client.serve("weather")
    assert unknown.value.status == 404 and unknown.value.param == "name"
    assert "customer_service" in unknown.value.message
    with pytest.raises(ApiError) as bad:
        client.serve("recommendation", {"k": "three"})
    assert bad.value.status == 400 and bad.value.param == "input.k"


async def test_the_async_sdk_serves_apps(server: LiveServer) -> None:
    async with AsyncClient(server.url, server.token) as client:
        assert len(await client.apps()) == 3
        answer = await client.serve("summarize", "One sentence to shorten, please.")
        assert answer["result"]["chunks"] == 1 and answer["usage"]["requests"] == 1
        with pytest.raises(ApiError) as missing:
            await client.serve("summarize")
        assert missing.value.status == 400 and missing.value.param == "input"


def test_cli_lists_the_apps(server: LiveServer) -> None:
    result = against(server, "app", "ls")
    assert result.exit_code == 0, result.output
    for name in ("customer_service", "recommendation_system", "summarize", "recommendation"):
        assert name in result.stdout
    raw = against(server, "app", "ls", "--json")
    assert {a["name"] for a in json.loads(raw.stdout)} >= {"summarize"}


def test_cli_calls_apps(server: LiveServer) -> None:
    result = against(server, "app", "call", "customer_service", "Can I pay with bitcoin?")
    assert result.exit_code == 0, result.output
    assert "[payment-methods] Payment methods" in result.stdout
    assert "customer_service: pid" in result.stderr
    result = against(server, "app", "call", "recommendation", "--json", '{"history": ["dune"]}')
    assert result.exit_code == 0, result.output
    assert "WHY" in result.stdout and "similar to 'Dune'" in result.stdout
    assert "dune" not in result.stdout.split()
    result = against(server, "app", "call", "summarize", "-", "--raw", stdin="Shorten me.")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["result"]["words_in"] == 2
    result = against(server, "app", "call", "customer_service")  # no input: a greeting
    assert result.exit_code == 0 and result.stdout.startswith("Hello!")


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("app", "call", "weather"), 1, "no app named 'weather'"),
        (("app", "call", "recommendation", "--json", "{nope"), 2, "--json is not valid JSON"),
        (("app", "call", "summarize", "text", "--json", '"x"'), 2, "not both"),
        (("app", "call", "recommendation", "--json", '{"k": 0}'), 1, "input.k"),
        (("app", "call", "summarize"), 1, "summarize needs an input"),
    ],
)
def test_cli_errors_are_one_line_and_non_zero(
    server: LiveServer, args: tuple[str, ...], code: int, message: str
) -> None:
    result = against(server, *args)
    assert result.exit_code == code, result.output
    assert isinstance(result.exception, SystemExit) and "Traceback" not in result.output
    assert result.stderr.startswith("error: ") and message in result.stderr
