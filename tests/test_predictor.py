"""The learned predictor: features without leakage, the held-out evaluation against
the mean per app, stored models across restarts, the retraining schedule, and
admission's Retry-After from predicted service times."""

from __future__ import annotations

import asyncio
import math
import random
import sqlite3
import sys
from pathlib import Path
from typing import Any

import pytest

from llmos.devices import MockDevice
from llmos.errors import Overloaded, Unavailable
from llmos.kernel import Kernel, Request, learn
from llmos.kernel.admission import Admission
from llmos.kernel.features import FEATURES, IDX, History, replay
from llmos.kernel.predictor import Predictor
from llmos.kernel.process import Process
from llmos.kernel.store import Store
from llmos.params import Settings
from llmos.types import SamplingParams, Snapshot

MSGS = [{"role": "user", "content": "hello"}]


def row(i: int, **kw: Any) -> dict[str, Any]:
    """One telemetry row, as the kernel writes it (sysinfo.telemetry_row)."""
    base: dict[str, Any] = {
        "request_id": f"r{i}",
        "owner": "alice",
        "pid": 1,
        "model": "mock",
        "device": "mock0",
        "kind": "chat",
        "priority": 20,
        "prompt_tokens": 10,
        "output_tokens": 10,
        "cached_tokens": 0,
        "max_tokens": 512,
        "queue_wait_s": 0.0,
        "ttft_s": 0.01,
        "total_s": 0.5,
        "finish_reason": "stop",
        "created_at": 1000.0 + i,
        "preemptions": 0,
        "session": "1",
        "app": "chat",
        "itl_s": 0.01,
    }
    base.update(kw)
    return base


def synthetic(n: int, seed: int = 1) -> list[dict[str, Any]]:
    """Three apps; within an app the output follows max_tokens (the signal a model
    can learn and a mean per app cannot); slot time follows the output."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        app = rng.choice(["chat", "summarize", "classify"])
        cap = {"chat": rng.choice([32, 64, 128, 160]), "summarize": 40, "classify": 8}[app]
        tokens = {
            "chat": cap,
            "summarize": rng.randint(15, 40),
            "classify": rng.randint(1, 3),
        }[app]
        service = 0.05 + 0.02 * tokens + rng.uniform(0, 0.02)
        out.append(
            row(
                i,
                app=app,
                owner=rng.choice(["alice", "bob"]),
                pid={"chat": 1, "summarize": 2, "classify": 3}[app],
                session=str({"chat": 1, "summarize": 2, "classify": 3}[app]),
                prompt_tokens=rng.randint(10, 400),
                max_tokens=cap,
                output_tokens=tokens,
                finish_reason="length" if tokens >= cap else "stop",
                queue_wait_s=0.1,
                total_s=0.1 + service,
                created_at=1000.0 + i,
            )
        )
    return out


# -- features ------------------------------------------------------------------------
def test_features_read_only_requests_finished_before_submission() -> None:
    rows = [
        row(0, output_tokens=100, created_at=0.0, total_s=10.0),  # finishes at 10
        row(1, output_tokens=7, created_at=1.0, total_s=1.0),  # finishes at 2
        row(2, output_tokens=50, created_at=5.0, total_s=1.0),  # submitted while 0 runs
        row(3, output_tokens=1, created_at=11.0, total_s=1.0),  # after all but none
        row(4, finish_reason="abort", created_at=0.5, total_s=20.0),  # in flight, no sample
    ]
    samples, history = replay(reversed(rows))  # any order in: submission order out
    assert len(samples) == 4 and samples.tokens == [100.0, 7.0, 50.0, 1.0]
    first, second, third, fourth = samples.x
    assert math.isnan(first[IDX["app_mean_tokens"]]) and first[IDX["inflight"]] == 0
    assert second[IDX["inflight"]] == 2  # 0 and the aborted one
    assert math.isnan(second[IDX["app_mean_tokens"]])  # nothing finished yet
    assert third[IDX["app_mean_tokens"]] == 7.0  # only row 1 had finished, not row 0
    assert third[IDX["session_last_tokens"]] == 7.0 and third[IDX["app_n"]] == 1
    assert fourth[IDX["app_mean_tokens"]] == pytest.approx((100 + 7 + 50) / 3)
    assert fourth[IDX["inflight"]] == 1  # the aborted request still runs
    assert history.overall.n == 4 and len(FEATURES) == len(first)


def test_history_is_bounded_and_the_heuristic_falls_back() -> None:
    h = History()
    feats = h.features("app", "o", "s", "chat", 5, 30, 0)
    assert h.heuristic(feats) == 30  # nothing known: min(max_tokens, 128)
    h.observe("other", "o2", "s2", 12, False, 0.1, None)
    assert h.heuristic(h.features("app", "o", "s", "chat", 5, 30, 0)) == 12  # overall
    h.observe("app", "o", "s9", 20, False, 0.1, 0.05)
    assert h.heuristic(h.features("app", "o", "s", "chat", 5, 30, 0)) == 20  # the app's
    assert h.heuristic(h.features("app", "o", "s", "chat", 5, 8, 0)) == 8  # capped
    assert h.itl_s == 0.05
    for i in range(10_050):
        h.observe("app", "o", f"session-{i}", 1, False, 0.0, None)
    assert len(h.sessions) == 10_000  # the oldest sessions are forgotten


# -- evaluation ------------------------------------------------------------------------
def test_baseline_is_the_mean_per_app_of_the_training_part() -> None:
    apps = ["a", "a", "b", "b", "b"]
    y = [10.0, 20.0, 1.0, 2.0, 3.0]
    assert learn.app_means(apps, y) == ({"a": 15.0, "b": 2.0}, 36.0 / 5)
    guesses = learn.baseline(apps, y, ["a", "b", "new"], None)
    assert guesses == [15.0, 2.0, 36.0 / 5]  # an unseen app: the overall mean
    assert learn.baseline(apps, y, ["a", "b"], [12.0, 100.0]) == [12.0, 2.0]  # max_tokens
    assert learn.mae([1.0, 5.0], [2.0, 2.0]) == 2.0
    assert [learn.split(n) for n in (2, 5, 10, 100, 101)] == [1, 4, 8, 80, 81]


def test_the_model_beats_the_mean_per_app_where_there_is_signal() -> None:
    rows = synthetic(400)
    samples, _ = replay(rows)
    trained = learn.train(samples)
    assert trained.rows == 400
    tokens, service = trained.fits["output_tokens"], trained.fits["service_s"]
    assert tokens.heldout == service.heldout == 80
    # The held-out 20% are the newest rows; the baseline is computed by hand here.
    cut = learn.split(400)
    means, overall = learn.app_means(samples.apps[:cut], samples.tokens[:cut])
    held = range(cut, 400)
    by_hand = sum(
        abs(min(means.get(samples.apps[i], overall), samples.max_tokens[i]) - samples.tokens[i])
        for i in held
    ) / len(held)
    assert tokens.mae_baseline == pytest.approx(by_hand)
    assert tokens.mae_model < 0.5 * tokens.mae_baseline  # max_tokens carries the chat app
    assert service.mae_model < 0.7 * service.mae_baseline
    assert tokens.improvement_pct is not None and tokens.improvement_pct > 50


def test_no_signal_is_reported_honestly() -> None:
    """Outputs independent of everything: the model cannot beat the mean by much."""
    rng = random.Random(3)
    rows = [
        row(i, output_tokens=rng.randint(1, 100), prompt_tokens=rng.randint(5, 50))
        for i in range(300)
    ]
    trained = learn.train(replay(rows)[0])
    fit = trained.fits["output_tokens"]
    assert fit.mae_model > 0.8 * fit.mae_baseline


# -- the predictor, storage, schedule ---------------------------------------------------------
def add_rows(store: Store, rows: list[dict[str, Any]]) -> None:
    for r in rows:
        store.add_telemetry(r)


async def test_restart_loads_the_stored_model_instead_of_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kernel = Kernel(Settings(home=tmp_path, admin_token="a"), [MockDevice(slots=2)])
    add_rows(kernel.store, synthetic(200))
    await kernel.start()
    first = kernel.predictor.trained
    assert first is not None and not first.loaded and first.rows == 200
    info = await kernel.call("sched.get", kernel.authenticate("a"))
    assert info["predictor"]["trained_on"] == 200 and info["predictor"]["rows"] == 200
    feats = replay(synthetic(200))[1].features("chat", "alice", "1", "chat", 50, 160, 0)
    row_in = learn.columns("output_tokens", [feats])
    before = first.fits["output_tokens"].model.predict(row_in)[0]
    await kernel.stop()
    with sqlite3.connect(tmp_path / "llmos.db") as db:
        stored = db.execute("SELECT target, rows, model IS NOT NULL FROM models").fetchall()
    assert sorted(stored) == [("output_tokens", 200, 1), ("service_s", 200, 1)]

    def no_training(*a: Any, **k: Any) -> Any:
        raise AssertionError("a stored model should have been loaded")

    monkeypatch.setattr(learn, "train", no_training)
    again = Kernel(Settings(home=tmp_path, admin_token="a"), [MockDevice(slots=2)])
    await again.start()
    loaded = again.predictor.trained
    assert loaded is not None and loaded.loaded
    assert loaded.trained_at == first.trained_at and loaded.rows == 200
    assert loaded.fits["output_tokens"].mae_model == first.fits["output_tokens"].mae_model
    assert loaded.fits["output_tokens"].model.predict(row_in)[0] == pytest.approx(before)
    assert again.predictor.new_rows == 0  # nothing finished after that training
    assert again.predictor.history.overall.n == 200  # statistics rebuilt from telemetry
    await again.stop()


async def test_a_stored_model_for_other_features_is_not_loaded(tmp_path: Path) -> None:
    store = Store(tmp_path / "llmos.db")
    add_rows(store, synthetic(100))
    p = Predictor(store)
    await p.start()
    assert p.trained is not None and not p.trained.loaded
    await p.stop()
    store.db.execute("UPDATE models SET features = '[\"old\"]'")
    p2 = Predictor(store)
    await p2.start()
    assert p2.trained is not None and not p2.trained.loaded  # trained again
    await p2.stop()
    # Older records keep their figures, only the newest keep a model.
    blobs = store.db.execute("SELECT COUNT(*), SUM(model IS NOT NULL) FROM models").fetchone()
    assert tuple(blobs) == (4, 2)
    store.close()


async def test_retrains_after_new_rows(tmp_path: Path) -> None:
    kernel = Kernel(Settings(home=tmp_path, admin_token="a"), [MockDevice(slots=2)])
    add_rows(kernel.store, synthetic(80))
    await kernel.start()
    p = kernel.predictor
    assert p.trained is not None and p.trained.rows == 80
    p.retrain_every = 6  # 80 // 8 = 10 new rows are due, the larger of the two
    admin = kernel.authenticate("a")
    for i in range(9):
        req = await kernel.call(
            "llm.chat", admin, {"model": "mock", "messages": MSGS, "max_tokens": 3 + i}
        )
        assert req.features is not None and len(req.features) == len(FEATURES)
        await req.outcome()
    await asyncio.sleep(0.05)
    assert p.trained.rows == 80 and p.new_rows == 9  # not yet: 9 < 10
    req = await kernel.call("llm.chat", admin, {"model": "mock", "messages": MSGS, "max_tokens": 4})
    await req.outcome()
    for _ in range(200):
        if p.trained.rows == 90:
            break
        await asyncio.sleep(0.02)
    assert p.trained.rows == 90 and p.new_rows == 0
    await kernel.stop()


async def test_retrains_on_the_timer_only_with_new_rows(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, admin_token="a", learn_interval_s=0.2)
    kernel = Kernel(settings, [MockDevice(slots=2)])
    add_rows(kernel.store, synthetic(70))
    await kernel.start()
    p = kernel.predictor
    assert p.trained is not None
    first = p.trained.trained_at
    await asyncio.sleep(0.5)
    assert p.trained.trained_at == first  # no new rows: no retraining
    req = await kernel.call(
        "llm.chat", kernel.authenticate("a"), {"model": "mock", "messages": MSGS, "max_tokens": 3}
    )
    await req.outcome()
    assert p.new_rows == 1 and not p.due()  # far from retrain_every
    for _ in range(100):
        if p.trained.trained_at != first:
            break
        await asyncio.sleep(0.05)
    assert p.trained.trained_at != first and p.trained.rows == 71 and p.new_rows == 0
    await kernel.stop()


def test_learn_interval_is_validated() -> None:
    with pytest.raises(Exception, match="learn_interval_s"):
        Settings(learn_interval_s=0).validate()


async def test_without_scikit_learn_the_heuristic_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "sklearn", None)  # import sklearn -> ImportError
    store = Store(tmp_path / "llmos.db")
    add_rows(store, synthetic(100))
    p = Predictor(store)
    await p.start()
    stats = p.stats()
    assert p.trained is None and stats["model"] == "none" and stats["targets"] == []
    assert "scikit-learn is not installed" in stats["note"] and "heuristic" in stats["note"]
    with pytest.raises(Unavailable, match="scikit-learn"):
        await p.retrain()
    req = request(session="1", app="chat", max_tokens=500)
    req.features = p.features_of(req)
    chats = [r for r in synthetic(100) if r["session"] == "1"]
    last = max(chats, key=lambda r: r["created_at"] + r["total_s"])  # the last to finish
    assert p.predict(req) == last["output_tokens"]  # the session's last output
    assert p.service_times([req]) is None  # admission keeps its moving mean
    await p.stop()
    store.close()


# -- admission ------------------------------------------------------------------------
class Priced:
    """A service-time predictor that knows each request's price, and counts calls."""

    def __init__(self) -> None:
        self.prices: dict[Request, float] = {}
        self.calls: list[int] = []

    def service_times(self, reqs: Any) -> list[float] | None:
        self.calls.append(len(reqs))
        return [self.prices[r] for r in reqs]


def request(owner: str = "alice", pid: int = 1, max_tokens: int = 16, **kw: Any) -> Request:
    snapshot = Snapshot(prompt_ids=[1, 2, 3], params=SamplingParams(max_tokens=max_tokens))
    return Request(pid=pid, owner=owner, model="m", kind="chat", snapshot=snapshot, **kw)


def test_retry_after_is_the_predicted_work_ahead_over_the_slots() -> None:
    priced = Priced()
    adm = Admission(max_queue=3, max_queue_per_owner=2, slots=2, predictor=priced)
    a, b, c = request("alice"), request("bob", 2), request("carol", 3)
    for req, seconds in ((a, 4.0), (b, 6.0), (c, 10.0)):
        priced.prices[req] = seconds
        adm.queued(req)
    proc = Process(pid=9, name="p", owner="dave", priority=20)
    with pytest.raises(Overloaded) as full:
        adm.admit(proc)
    assert full.value.param == "max_queue"
    assert full.value.retry_after == math.ceil((4 + 6 + 10 + 1.0) / 2)  # + one mean request
    assert priced.calls == [3]  # one batched prediction
    adm.dequeued(c)  # started: its work is no longer ahead
    adm.admit(proc)  # room again
    adm.dequeued(b)
    assert adm.work_s == 4.0 and adm.work_by_owner == {"alice": 4.0}
    d = request("alice", 1)
    priced.prices[d] = 7.0
    adm.queued(d)
    with pytest.raises(Overloaded) as owner:
        adm.admit(Process(pid=1, name="p", owner="alice", priority=20))
    assert owner.value.param == "max_queue_per_owner"
    assert owner.value.retry_after == math.ceil((4 + 7 + 1.0) / 2)
    assert priced.calls == [3, 1]  # only the newcomer was priced
    for req in (a, d):
        adm.dequeued(req)
    assert adm.work_s == 0.0 and adm.work_by_owner == {} and adm.work_by_pid == {}


def test_without_a_model_retry_after_uses_the_mean_service_time() -> None:
    adm = Admission(max_queue=4, max_queue_per_owner=4, slots=2)
    for _ in range(4):
        adm.queued(request())
    adm.served(11.0)  # the moving mean: 0.9 * 1 + 0.1 * 11 = 2
    with pytest.raises(Overloaded) as full:
        adm.admit(Process(pid=5, name="p", owner="bob", priority=20))
    assert full.value.retry_after == math.ceil((4 * 2.0 + 2.0) / 2)


async def test_the_kernel_prices_waiting_requests_with_its_latency_model(tmp_path: Path) -> None:
    """Trained on rows where requests held a slot for about 3 s, the kernel's 429
    says the queue drains in about (waiting x 3 s) / slots."""
    rows = [row(i, total_s=3.1 + 0.01 * (i % 3), queue_wait_s=0.1) for i in range(100)]
    settings = Settings(home=tmp_path, admin_token="a", max_queue=6, max_queue_per_owner=6)
    kernel = Kernel(settings, [MockDevice(slots=2, token_delay=0.05)])
    add_rows(kernel.store, rows)
    await kernel.start()
    assert kernel.predictor.trained is not None
    admin = kernel.authenticate("a")
    body = {"model": "mock", "messages": MSGS, "max_tokens": 200}
    reqs = [await kernel.call("llm.chat", admin, body) for _ in range(8)]  # 2 run, 6 wait
    with pytest.raises(Overloaded) as full:
        await kernel.call("llm.chat", admin, body)
    assert 8 <= full.value.retry_after <= 11  # 6 x ~3 s / 2 slots + 1 mean request / 2
    for r in reqs:
        kernel.cancel(r)
    await kernel.stop()
