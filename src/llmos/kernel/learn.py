"""Training, evaluation and storage of the predictor's models.

Two targets, one gradient-boosted regressor each (features: kernel/features.py):
- `output_tokens`: how many tokens the request generates (sjf orders by it). It
  fits the median (absolute error: the score is a mean absolute error, and sjf
  needs only an order) and leaves out the load features, which say nothing
  about what a model will write (time-series cross-validation on the training
  part of a real run: MAE 5.3 tokens without them, 6.5 with them and squared error);
- `service_s`: how long it holds a slot, from its first dispatch to its end
  (telemetry's total_s - queue_wait_s), on every feature; it fits the mean, as
  the work ahead of a newcomer is a sum of service times (admission's
  Retry-After). Not end-to-end latency: the queue wait is the scheduler's doing
  and depends on what else is queued.

Evaluation, on every (re)train: the samples in submission order are split 80/20,
the newest 20% held out; a model fitted on the first 80% is scored (mean absolute
error) against the naive baseline, the mean per app of the first 80% (the
overall mean for an app not seen there). Both guesses are capped at the request's
max_tokens for output tokens (more is impossible; the cap only helps the
baseline). Then the model is refitted on all samples for serving.

Everything here blocks: the predictor runs it on its niced training thread, with
one BLAS/OpenMP thread, and reads and writes SQLite through a connection of that
thread's own (WAL lets it read beside the kernel's connection). Stored models are
pickles: they are read only from the kernel's own database under LLMOS_HOME, and
only when pickled by the installed scikit-learn for the current features."""

from __future__ import annotations

import json
import pickle
import sqlite3
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmos.errors import NotEnoughData, Unavailable
from llmos.kernel.features import FEATURES, IDX, Features, Samples

TARGETS = ("output_tokens", "service_s")
LOAD = ("inflight", "recent_itl_s", "app_mean_service_s")  # the machine's speed and load
COLUMNS = {  # the features each target's model reads
    "output_tokens": tuple(name for name in FEATURES if name not in LOAD),
    "service_s": FEATURES,
}
UNITS = {"output_tokens": "tokens", "service_s": "s"}
HOLDOUT = 0.2
KEEP_STATS = 1000  # training records kept in the models table (blobs: the newest only)

SCHEMA = """
CREATE TABLE IF NOT EXISTS models (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    trained_at REAL NOT NULL,
    target TEXT NOT NULL,
    rows INTEGER NOT NULL,
    heldout INTEGER NOT NULL,
    mae_model REAL NOT NULL,
    mae_baseline REAL NOT NULL,
    kind TEXT NOT NULL,
    features TEXT NOT NULL,
    sklearn TEXT NOT NULL,
    model BLOB
);
CREATE INDEX IF NOT EXISTS models_target ON models(target, id);
"""


def sklearn_version() -> str | None:
    """The installed scikit-learn's version; None without the [learn] extra."""
    try:
        import sklearn
    except ImportError:
        return None
    return str(sklearn.__version__)


def require_sklearn() -> str:
    version = sklearn_version()
    if version is None:
        raise Unavailable(
            "scikit-learn is not installed (pip install 'llmos[learn]'): "
            "the predictor answers with its heuristic only",
            code="learn_unavailable",
        )
    return version


def estimator(target: str) -> Any:
    from sklearn.ensemble import HistGradientBoostingRegressor

    return HistGradientBoostingRegressor(
        loss="absolute_error" if target == "output_tokens" else "squared_error",
        max_iter=200,
        learning_rate=0.05,
        min_samples_leaf=8,
        l2_regularization=1.0,
        random_state=0,
    )


def columns(target: str, rows: Sequence[Features]) -> list[list[float]]:
    """The rows as the target's model reads them."""
    keep = [IDX[name] for name in COLUMNS[target]]
    return [[f[i] for i in keep] for f in rows]


@dataclass
class Fit:
    """One target's model and how it did on the held-out rows."""

    target: str
    model: Any  # fitted on all rows (None when loaded without its blob)
    heldout: int
    mae_model: float
    mae_baseline: float

    @property
    def improvement_pct(self) -> float | None:
        """How much lower the model's error is than the baseline's, in percent."""
        if self.mae_baseline <= 0:
            return None
        return 100.0 * (1.0 - self.mae_model / self.mae_baseline)


@dataclass
class Trained:
    trained_at: float  # wall clock
    rows: int  # samples the models saw (train + held out)
    fits: dict[str, Fit] = field(default_factory=dict)
    kind: str = "HistGradientBoostingRegressor"
    loaded: bool = False  # read back from the models table at start


def app_means(apps: Sequence[str], y: Sequence[float]) -> tuple[dict[str, float], float]:
    """The mean of y per app, and over all (the baseline's two guesses)."""
    sums: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    for app, v in zip(apps, y, strict=True):
        sums[app] += v
        counts[app] += 1
    overall = sum(y) / len(y) if y else 0.0
    return {a: sums[a] / counts[a] for a in sums}, overall


def baseline(
    train_apps: Sequence[str],
    train_y: Sequence[float],
    apps: Sequence[str],
    caps: Sequence[float] | None,
) -> list[float]:
    """The naive guesses for `apps`: each one's mean in the training part."""
    means, overall = app_means(train_apps, train_y)
    guesses = [means.get(a, overall) for a in apps]
    if caps is not None:
        guesses = [min(g, c) for g, c in zip(guesses, caps, strict=True)]
    return guesses


def mae(guess: Sequence[float], truth: Sequence[float]) -> float:
    return sum(abs(g - t) for g, t in zip(guess, truth, strict=True)) / max(1, len(truth))


def split(n: int, holdout: float = HOLDOUT) -> int:
    """Where the held-out (newest) part starts: at least one row on each side."""
    return min(n - 1, max(1, n - round(n * holdout)))


def train(samples: Samples, holdout: float = HOLDOUT) -> Trained:
    """Evaluate on the newest `holdout` of the samples, then refit on all of them."""
    require_sklearn()
    import numpy as np
    from threadpoolctl import threadpool_limits

    n = len(samples)
    if n < 2:
        raise NotEnoughData("the predictor needs at least 2 samples")
    cut = split(n, holdout)
    caps = np.asarray(samples.max_tokens, dtype=float)
    out = Trained(trained_at=time.time(), rows=n)
    with threadpool_limits(limits=1):
        for target, y, capped in (
            ("output_tokens", samples.tokens, True),
            ("service_s", samples.service_s, False),
        ):
            x = np.asarray(columns(target, samples.x), dtype=float)
            model = estimator(target).fit(x[:cut], y[:cut])
            guess = clip(model.predict(x[cut:]), caps[cut:] if capped else None)
            base = baseline(
                samples.apps[:cut],
                y[:cut],
                samples.apps[cut:],
                samples.max_tokens[cut:] if capped else None,
            )
            out.fits[target] = Fit(
                target=target,
                model=estimator(target).fit(x, y),
                heldout=n - cut,
                mae_model=mae(list(guess), y[cut:]),
                mae_baseline=mae(base, y[cut:]),
            )
    return out


def clip(pred: Any, caps: Any | None) -> Any:
    """Predictions made possible: no negative counts or times, no more than max_tokens."""
    import numpy as np

    return np.clip(pred, 0.0, caps if caps is not None else None)


# -- storage -----------------------------------------------------------------------
@contextmanager
def connect(path: Path) -> Iterator[sqlite3.Connection]:
    """A connection of the calling (training) thread's own."""
    db = sqlite3.connect(str(path), isolation_level=None)
    db.row_factory = sqlite3.Row
    db.execute("PRAGMA busy_timeout=5000")
    try:
        yield db
    finally:
        db.close()


def create_table(db: sqlite3.Connection) -> None:
    db.executescript(SCHEMA)


def read_telemetry(path: Path, limit: int) -> list[dict[str, Any]]:
    """The newest `limit` telemetry rows."""
    with connect(path) as db:
        rows = db.execute("SELECT * FROM telemetry ORDER BY id DESC LIMIT ?", (limit,))
        return [dict(r) for r in rows.fetchall()]


def save(path: Path, trained: Trained, version: str) -> None:
    """One record per target; older records lose their blobs (their figures stay)."""
    with connect(path) as db:
        db.execute("BEGIN IMMEDIATE")
        try:
            for fit in trained.fits.values():
                blob = pickle.dumps(fit.model, protocol=pickle.HIGHEST_PROTOCOL)
                cur = db.execute(
                    "INSERT INTO models (trained_at, target, rows, heldout, mae_model,"
                    " mae_baseline, kind, features, sklearn, model)"
                    " VALUES (?,?,?,?,?,?,?,?,?,?)",
                    (
                        trained.trained_at,
                        fit.target,
                        trained.rows,
                        fit.heldout,
                        fit.mae_model,
                        fit.mae_baseline,
                        trained.kind,
                        json.dumps(COLUMNS[fit.target]),
                        version,
                        blob,
                    ),
                )
                db.execute(
                    "UPDATE models SET model = NULL"
                    " WHERE target = ? AND id < ? AND model IS NOT NULL",
                    (fit.target, cur.lastrowid),
                )
            db.execute(
                "DELETE FROM models WHERE id <= (SELECT MAX(id) FROM models) - ?", (KEEP_STATS,)
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise


def load(path: Path, version: str | None) -> Trained | None:
    """The newest stored training whose models this code can use: every target
    present, the same features, pickled by the installed scikit-learn (an
    estimator pickled by another version may not load or may predict wrongly)."""
    with connect(path) as db:
        last = db.execute("SELECT MAX(trained_at) FROM models WHERE model IS NOT NULL").fetchone()
        if last is None or last[0] is None:
            return None
        rows = db.execute(
            "SELECT * FROM models WHERE trained_at = ? AND model IS NOT NULL", (last[0],)
        ).fetchall()
    by_target = {r["target"]: r for r in rows}
    if set(by_target) != set(TARGETS) or version is None:
        return None
    if any(
        r["features"] != json.dumps(COLUMNS[r["target"]]) or r["sklearn"] != version for r in rows
    ):
        return None
    first = by_target[TARGETS[0]]
    out = Trained(trained_at=first["trained_at"], rows=first["rows"], kind=first["kind"])
    out.loaded = True
    for target, r in by_target.items():
        out.fits[target] = Fit(
            target=target,
            model=pickle.loads(r["model"]),
            heldout=r["heldout"],
            mae_model=r["mae_model"],
            mae_baseline=r["mae_baseline"],
        )
    return out
