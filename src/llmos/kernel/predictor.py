"""The predictor: how many tokens a request will generate (sjf orders by it) and
how long it will hold a slot (admission's Retry-After), learned from the kernel's
own telemetry. Features: kernel/features.py; training, evaluation and storage:
kernel/learn.py.

A request's features are computed when it is submitted and kept on it
(`req.features`); when it finishes, its outcome updates the statistics the next
requests' features read. The models retrain in the background after
`retrain_every` newly finished requests (or an eighth of the rows they were
trained on, when that is more), and every `interval_s` if any request finished
since the last training; always on one training thread at the lowest CPU
priority with one BLAS/OpenMP thread — on a small machine a parallel fit beside
the engine's threads stalls decoding for seconds. Each training is evaluated and
stored (the `models` table); at start the newest stored models are loaded
instead of training again.

Without scikit-learn, or before `min_rows` requests have finished, a heuristic
answers output tokens (the session's last output, else the app's, owner's or
everyone's mean) and service times are left to admission's moving mean."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from llmos.errors import NotEnoughData, Unavailable
from llmos.kernel import learn
from llmos.kernel.features import FEATURES, Features, History, replay, trainable
from llmos.kernel.request import Request
from llmos.kernel.store import Store
from llmos.params import LEARN_EVERY_ROWS, LEARN_INTERVAL_S, LEARN_MIN_ROWS, LEARN_WINDOW_ROWS

log = logging.getLogger(__name__)

T = TypeVar("T")


class Predictor:
    def __init__(
        self,
        store: Store,
        *,
        interval_s: float = LEARN_INTERVAL_S,
        retrain_every: int = LEARN_EVERY_ROWS,
        min_rows: int = LEARN_MIN_ROWS,
        window: int = LEARN_WINDOW_ROWS,
        inflight: Callable[[], int] = lambda: 0,
    ) -> None:
        self.path: Path = store.path
        learn.create_table(store.db)
        self.interval_s = interval_s
        self.retrain_every = retrain_every
        self.min_rows = min_rows
        self.window = window  # the newest telemetry rows a training reads
        self.inflight = inflight  # requests queued or running now (a feature)
        self.sklearn = learn.sklearn_version()
        self.history = History()
        self.trained: learn.Trained | None = None
        self.new_rows = 0  # requests finished since the last training began
        self.last_error: str | None = None  # why the last training did not happen
        self._limiter: Any = None  # threadpoolctl, made with the first model
        self._lock = asyncio.Lock()  # one training at a time
        self._executor: ThreadPoolExecutor | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._started = False

    # -- serving (event loop) ----------------------------------------------------------
    def features_of(self, req: Request) -> Features:
        p = req.snapshot.params
        return self.history.features(
            req.app,
            req.owner,
            req.session,
            req.kind,
            len(req.snapshot.prompt_ids),
            p.max_tokens,
            self.inflight(),
        )

    def predict(self, req: Request) -> float:
        """The request's total output tokens, 1..max_tokens."""
        feats = req.features or self.features_of(req)
        cap = float(req.snapshot.params.max_tokens)
        guess = self._predict("output_tokens", [feats])
        value = guess[0] if guess is not None else self.history.heuristic(feats)
        return max(1.0, min(cap, value))

    def service_times(self, reqs: Sequence[Request]) -> list[float] | None:
        """Seconds each request will hold a slot (one batched prediction); None
        without a trained model."""
        if not reqs:
            return []
        guess = self._predict("service_s", [r.features or self.features_of(r) for r in reqs])
        return None if guess is None else [max(0.0, g) for g in guess]

    def _predict(self, target: str, rows: list[Features]) -> list[float] | None:
        fit = self.trained.fits.get(target) if self.trained else None
        if fit is None or fit.model is None or self._limiter is None:
            return None
        try:
            # One OpenMP thread: this runs on the event loop, beside the engine's threads.
            with self._limiter.limit(limits=1, user_api="openmp"):
                return [float(v) for v in fit.model.predict(learn.columns(target, rows))]
        except Exception:  # a broken model must not break scheduling or admission
            log.exception("the %s model failed; using the heuristic", target)
            return None

    def observe_request(self, req: Request) -> None:
        """A request finished (stop or length): learn from it, retrain when due."""
        if req.started_at is None or req.finished_at is None:
            return
        capped = (
            req.finish_reason == "length" or req.output_tokens >= req.snapshot.params.max_tokens
        )
        self.history.observe(
            req.app,
            req.owner,
            req.session,
            req.output_tokens,
            capped,
            req.finished_at - req.started_at,
            req.itl_s,
        )
        self.new_rows += 1
        if self.due():
            self._spawn(self._retrain_quietly())

    def due(self) -> bool:
        if not self._started or self.sklearn is None or self._lock.locked():
            return False
        if self.trained is None:
            return self.history.overall.n >= self.min_rows and self.new_rows >= 1
        return self.new_rows >= max(self.retrain_every, self.trained.rows // 8)

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        """Rebuild the statistics from telemetry; load the stored models, or train
        if there are none and rows enough; start the retraining timer."""
        history, trained, newer = await self._in_thread(self._boot)
        self.history, self.new_rows = history, newer
        if trained is not None:
            self.trained = trained
        self._started = True
        self._spawn(self._tick())

    async def stop(self) -> None:
        self._started = False
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._executor is not None:
            executor, self._executor = self._executor, None
            await asyncio.to_thread(executor.shutdown, wait=True, cancel_futures=True)

    async def retrain(self) -> learn.Trained:
        """Train and evaluate now (waits for a training under way to end first)."""
        learn.require_sklearn()
        async with self._lock:
            taken, self.new_rows = self.new_rows, 0
            try:
                trained = await self._in_thread(self._train)
            except BaseException as exc:
                self.new_rows += taken
                self.last_error = getattr(exc, "message", None) or repr(exc)
                raise
            self.trained, self.last_error = trained, None
            return trained

    async def _retrain_quietly(self) -> None:
        try:
            await self.retrain()
        except Unavailable as exc:  # too few rows: the next rows or tick will tell
            log.debug("no retraining: %s", exc.message)
        except Exception:
            log.exception("retraining the predictor failed")

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            if self.new_rows > 0 and self.sklearn is not None and not self._lock.locked():
                await self._retrain_quietly()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- the training thread -------------------------------------------------------------
    def _boot(self) -> tuple[History, learn.Trained | None, int]:
        rows = learn.read_telemetry(self.path, self.window)
        samples, history = replay(rows)
        trained = None
        if self.sklearn is not None:
            try:
                trained = learn.load(self.path, self.sklearn)
            except Exception:  # unreadable: train again below
                log.exception("the stored predictor models could not be loaded")
            if trained is None and len(samples) >= self.min_rows:
                trained = learn.train(samples)
                learn.save(self.path, trained, self.sklearn)
            if trained is not None:
                self._make_limiter()
        since = trained.trained_at if trained is not None else float("-inf")
        newer = sum(1 for r in rows if trainable(r) and r["created_at"] > since)
        return history, trained, newer

    def _train(self) -> learn.Trained:
        version = learn.require_sklearn()
        samples, _ = replay(learn.read_telemetry(self.path, self.window))
        if len(samples) < self.min_rows:
            raise NotEnoughData(
                f"the predictor needs {self.min_rows} finished requests to train; "
                f"the telemetry has {len(samples)}"
            )
        trained = learn.train(samples)
        learn.save(self.path, trained, version)
        self._make_limiter()
        return trained

    def _make_limiter(self) -> None:
        if self._limiter is None:
            from threadpoolctl import ThreadpoolController

            self._limiter = ThreadpoolController()

    async def _in_thread(self, fn: Callable[[], T]) -> T:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                1, thread_name_prefix="llmos-train", initializer=_lowest_priority
            )
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    # -- reports -------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """The scheduler's view (sched.get)."""
        t = self.trained
        return {
            "rows": self.history.overall.n,
            "trained_on": t.rows if t else 0,
            "model": t.kind if t else None,
        }

    def stats(self) -> dict[str, Any]:
        """learn.stats: the models and their held-out error against the baseline."""
        t = self.trained
        if self.sklearn is None:
            note = "scikit-learn is not installed (pip install 'llmos[learn]'): heuristic only"
        elif t is None:
            seen = self.history.overall.n
            note = f"not trained yet ({seen} of {self.min_rows} finished requests): heuristic only"
        else:
            note = None
        targets = []
        for fit in t.fits.values() if t else ():
            pct = fit.improvement_pct
            targets.append(
                {
                    "target": fit.target,
                    "unit": learn.UNITS[fit.target],
                    "heldout": fit.heldout,
                    "mae_model": round(fit.mae_model, 4),
                    "mae_baseline": round(fit.mae_baseline, 4),
                    "improvement_pct": None if pct is None else round(pct, 1),
                    "features": list(learn.COLUMNS[fit.target]),
                }
            )
        return {
            "model": t.kind if t else "none",
            "note": note,
            "sklearn": self.sklearn,
            "rows": t.rows if t else 0,
            "trained_at": t.trained_at if t else None,
            "loaded": bool(t and t.loaded),
            "training": self._lock.locked(),
            "observed": self.history.overall.n,
            "new_rows": self.new_rows,
            "last_error": self.last_error,
            "holdout": learn.HOLDOUT,
            "baseline": "mean per app of the training part",
            "targets": targets,
            "features": list(FEATURES),
            "retrain_every": self.retrain_every,
            "interval_s": self.interval_s,
            "min_rows": self.min_rows,
        }


def _lowest_priority() -> None:
    with contextlib.suppress(OSError, AttributeError):  # Linux: nice applies per thread
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
