"""The predictor's syscalls: `learn.stats` (its models and their held-out error
against the naive baseline) and `learn.train` (retrain now; admins)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llmos.kernel.sysdefs import ADMINS, READERS, Syscall
from llmos.kernel.tokens import Caller

if TYPE_CHECKING:
    from llmos.kernel.kernel import Kernel


async def _learn_stats(k: Kernel, c: Caller, a: dict[str, Any]) -> Any:
    return k.predictor.stats()


async def _learn_train(k: Kernel, c: Caller, a: dict[str, Any]) -> Any:
    await k.predictor.retrain()
    return k.predictor.stats()


LEARN_SYSCALLS = (
    Syscall(
        "learn.stats",
        _learn_stats,
        READERS,
        "the predictor: rows, held-out MAE of its models against the mean per app",
    ),
    Syscall(
        "learn.train",
        _learn_train,
        ADMINS,
        "retrain and evaluate the predictor now; returns learn.stats",
        True,
    ),
)
