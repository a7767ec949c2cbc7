"""The predictor's surface: learn.stats and learn.train over HTTP, the SDK and
`llmos learn`, on the mock device (the bad paths included)."""

from __future__ import annotations

from click.testing import Result
from typer.testing import CliRunner

from llmos.cli.main import build_app
from llmos.sdk import ApiError, Client
from tests._live_server import LiveServer
from tests.conftest import MockKernel
from tests.test_predictor import add_rows, synthetic


def cli(server: LiveServer, *args: str, token: str | None = None) -> Result:
    argv = [*args, "--url", server.url, "--token", token or server.token]
    return CliRunner().invoke(build_app(), argv)


async def test_stats_and_train_routes(mock: MockKernel) -> None:
    c = mock.client
    empty = await c.get("/v1/learn/stats")
    assert empty.status_code == 200
    info = empty.json()
    assert info["model"] == "none" and info["targets"] == [] and info["rows"] == 0
    assert "not trained yet (0 of 64" in info["note"]
    assert "app_mean_tokens" in info["features"] and info["holdout"] == 0.2

    too_few = await c.post("/v1/learn/train")
    assert too_few.status_code == 409
    err = too_few.json()["error"]
    assert err["code"] == "not_enough_data" and "needs 64 finished requests" in err["message"]

    add_rows(mock.kernel.store, synthetic(150))
    trained = await c.post("/v1/learn/train")
    assert trained.status_code == 200, trained.text
    info = trained.json()
    assert info["model"] == "HistGradientBoostingRegressor" and info["rows"] == 150
    assert info["note"] is None and info["last_error"] is None and not info["loaded"]
    by_target = {t["target"]: t for t in info["targets"]}
    assert set(by_target) == {"output_tokens", "service_s"}
    tokens = by_target["output_tokens"]
    assert tokens["heldout"] == 30 and tokens["unit"] == "tokens"
    assert "inflight" not in tokens["features"] and "inflight" in by_target["service_s"]["features"]
    assert tokens["mae_model"] > 0 and tokens["mae_baseline"] > 0  # who wins: test_predictor
    expected = round(100 * (1 - tokens["mae_model"] / tokens["mae_baseline"]), 1)
    assert abs(tokens["improvement_pct"] - expected) <= 0.2  # from unrounded figures
    again = (await c.get("/v1/learn/stats")).json()
    assert again["trained_at"] == info["trained_at"] and again["targets"] == info["targets"]


async def test_only_admins_retrain_and_the_denial_is_audited(mock: MockKernel) -> None:
    k = mock.kernel
    made = await mock.client.post("/v1/users", json={"name": "ursula", "role": "user"})
    viewer = await mock.client.post("/v1/users", json={"name": "vic", "role": "viewer"})
    user_h = {"Authorization": f"Bearer {made.json()['token']}"}
    viewer_h = {"Authorization": f"Bearer {viewer.json()['token']}"}
    denied = await mock.client.post("/v1/learn/train", headers=user_h)
    assert denied.status_code == 403
    assert denied.json()["error"]["type"] == "permission_error"
    assert (await mock.client.post("/v1/learn/train", headers=viewer_h)).status_code == 403
    seen = await mock.client.get("/v1/learn/stats", headers=viewer_h)
    assert seen.status_code == 200 and seen.json()["model"] == "none"
    rows = k.audit.listing(actor="ursula")
    assert any(r["action"] == "learn.train" and r["outcome"] == "denied" for r in rows)
    add_rows(k.store, synthetic(80))
    assert (await mock.client.post("/v1/learn/train")).status_code == 200
    allowed = k.audit.listing(actor="admin")
    assert any(r["action"] == "learn.train" and r["outcome"] == "allowed" for r in allowed)


def test_sdk_and_cli(server: LiveServer, client: Client) -> None:
    before = client.learn_stats()
    result = cli(server, "learn", "stats")
    assert result.exit_code == 0, result.output
    assert "model: none" in result.stdout and "heuristic only" in result.stdout
    # Real telemetry: requests through the kernel; at 64 the predictor trains itself.
    for i in range(70):
        client.chat(f"hello {i}", max_tokens=2 + i % 7)
    after = client.learn_train()
    assert after["rows"] >= before["observed"] + 64 and len(after["targets"]) == 2
    assert client.learn_stats()["trained_at"] == after["trained_at"]
    shown = cli(server, "learn", "stats")
    assert shown.exit_code == 0, shown.output
    out = shown.stdout
    assert "HistGradientBoostingRegressor" in out and "MAE BASELINE" in out
    assert "output_tokens" in out and "service_s" in out and "HELD OUT" in out
    assert "baseline: the mean per app of the rest" in out and "the newest 20%" in out
    assert f"on {after['rows']} rows" in out
    trained = cli(server, "learn", "train", "--json")
    assert trained.exit_code == 0, trained.output
    assert '"model": "HistGradientBoostingRegressor"' in trained.stdout


def test_cli_train_by_a_user_fails_cleanly(server: LiveServer, client: Client) -> None:
    user = client.add_user("uma", "user")
    result = cli(server, "learn", "train", token=user["token"])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert result.stderr.startswith("error: ") and "Traceback" not in result.output
    with Client(server.url, user["token"]) as as_user:
        try:
            as_user.learn_train()
        except ApiError as exc:
            assert exc.status == 403
        else:
            raise AssertionError("a user retrained the predictor")
        assert as_user.learn_stats()["features"]  # reading is fine


def test_cli_unreachable_kernel_is_one_line() -> None:
    from tests._live_server import closed_port_url

    result = CliRunner().invoke(build_app(), ["learn", "stats", "--url", closed_port_url()])
    assert result.exit_code == 1 and "cannot reach the llmos kernel" in result.stderr
    assert "Traceback" not in result.output
