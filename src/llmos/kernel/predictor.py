"""Output-length prediction for shortest-job-first, learned from the kernel's own
telemetry. In real traces prompt length barely predicts output length; who asks
(owner) and what the same session produced before do. Features are computed when a
request is submitted, from what the kernel knew then, and kept on the request; when
it finishes, (features, output tokens) becomes a training row.

Until `min_rows` rows exist, or without scikit-learn installed, a heuristic
answers: the session's last output, else the owner's mean, else the global mean.
The model retrains every `retrain_every` new rows in its own worker thread, at the
lowest CPU priority and with one BLAS/OpenMP thread: on a small machine a parallel
fit spinning beside the engine's threads would stall decoding for many seconds."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import threading
from collections import defaultdict, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from llmos.kernel.request import Request

log = logging.getLogger(__name__)

Features = tuple[float, ...]


@dataclass
class _Mean:
    n: int = 0
    total: float = 0.0
    last: float | None = None

    def add(self, x: float) -> None:
        self.n += 1
        self.total += x
        self.last = x

    @property
    def mean(self) -> float | None:
        return self.total / self.n if self.n else None


@dataclass
class OutputPredictor:
    min_rows: int = 64
    retrain_every: int = 64
    owners: dict[str, _Mean] = field(default_factory=lambda: defaultdict(_Mean))
    sessions: dict[str, _Mean] = field(default_factory=lambda: defaultdict(_Mean))
    overall: _Mean = field(default_factory=_Mean)
    rows: deque[tuple[Features, float]] = field(default_factory=lambda: deque(maxlen=5000))
    model: Any = None
    limiter: Any = field(default=None, repr=False)  # threadpoolctl, set with the model
    new_rows: int = 0
    training: bool = False
    trained_on: int = 0
    executor: ThreadPoolExecutor | None = field(default=None, repr=False)

    def features(self, owner: str, session: str, prompt_tokens: int, max_tokens: int) -> Features:
        o, s, g = self.owners.get(owner), self.sessions.get(session), self.overall.mean
        default = g if g is not None else min(max_tokens, 128)
        return (
            math.log1p(prompt_tokens),
            math.log1p(max_tokens),
            o.mean if o and o.mean is not None else default,
            s.last if s and s.last is not None else default,
            s.mean if s and s.mean is not None else default,
            float(s.n if s else 0),
        )

    def features_of(self, req: Request) -> Features:
        return self.features(
            req.owner, req.session, len(req.snapshot.prompt_ids), req.snapshot.params.max_tokens
        )

    def predict(self, req: Request) -> float:
        feats = req.features or self.features_of(req)
        if self.model is not None:
            try:
                # One OpenMP thread: this runs on the event loop, beside the engine.
                with self.limiter.limit(limits=1, user_api="openmp"):
                    return float(max(1.0, self.model.predict([list(feats)])[0]))
            except Exception:  # a broken model must not break scheduling
                log.exception("output-length model failed; using the heuristic")
        return float(feats[3])  # the session's last output, else owner mean, else global

    def observe(
        self, owner: str, session: str, features: Features | None, output_tokens: int
    ) -> None:
        if features is not None:
            self.rows.append((features, float(output_tokens)))
            self.new_rows += 1
        self.owners[owner].add(output_tokens)
        self.sessions[session].add(output_tokens)
        self.overall.add(output_tokens)

    def observe_request(self, req: Request) -> None:
        self.observe(req.owner, req.session, req.features, req.output_tokens)

    def bootstrap(self, rows: list[dict[str, Any]]) -> None:
        """Replay telemetry rows (oldest first) to rebuild statistics and training rows."""
        for r in rows:
            if r["finish_reason"] not in ("stop", "length"):
                continue
            session = str(r["pid"])
            feats = self.features(r["owner"], session, r["prompt_tokens"], r["max_tokens"])
            self.observe(r["owner"], session, feats, r["output_tokens"])
        self.fit()

    async def load(self, rows: list[dict[str, Any]]) -> None:
        """`bootstrap` off the event loop, on the training thread."""
        await asyncio.get_running_loop().run_in_executor(self._trainer(), self.bootstrap, rows)

    def due(self) -> bool:
        return (
            not self.training
            and len(self.rows) >= self.min_rows
            and (self.model is None or self.new_rows >= self.retrain_every)
        )

    def fit(self) -> None:
        """Train on the rows so far (blocking; call from a worker thread)."""
        if len(self.rows) < self.min_rows:
            return
        try:
            from sklearn.ensemble import HistGradientBoostingRegressor
            from threadpoolctl import threadpool_limits
        except ImportError:  # the [learn] extra is not installed: heuristic only
            return
        data = list(self.rows)
        x = [list(f) for f, _ in data]
        y = [t for _, t in data]
        model = HistGradientBoostingRegressor(max_iter=80, learning_rate=0.1, min_samples_leaf=8)
        with threadpool_limits(limits=1):
            model.fit(x, y)
        if self.limiter is None:
            from threadpoolctl import ThreadpoolController

            self.limiter = ThreadpoolController()
        self.model, self.new_rows, self.trained_on = model, 0, len(data)

    async def maybe_retrain(self) -> None:
        if not self.due():
            return
        self.training = True
        try:
            await asyncio.get_running_loop().run_in_executor(self._trainer(), self.fit)
        finally:
            self.training = False

    def _trainer(self) -> ThreadPoolExecutor:
        """One niced thread for training, created on first use."""
        if self.executor is None:
            self.executor = ThreadPoolExecutor(
                1, thread_name_prefix="llmos-train", initializer=_lowest_priority
            )
        return self.executor

    def close(self) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=True, cancel_futures=True)
            self.executor = None


def _lowest_priority() -> None:
    with contextlib.suppress(OSError, AttributeError):  # Linux: nice applies per thread
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
