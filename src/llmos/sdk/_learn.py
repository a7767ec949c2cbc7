"""The learned predictor from the SDK: mixins for `Client` and `AsyncClient`.

client.learn_stats()   # held-out MAE of the models against the mean per app
client.learn_train()   # retrain and evaluate now (admins); returns the stats
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any


class LearnMixin:
    """Client's predictor methods (sync)."""

    if TYPE_CHECKING:

        def _request(
            self, method: str, path: str, body: dict[str, Any] | None = None, **kwargs: Any
        ) -> Any: ...

    def learn_stats(self) -> dict[str, Any]:
        """The predictor's models, rows, and held-out error against the naive baseline."""
        return dict(self._request("GET", "/v1/learn/stats"))

    def learn_train(self) -> dict[str, Any]:
        """Retrain and evaluate the predictor now (admins); returns the new stats."""
        return dict(self._request("POST", "/v1/learn/train"))


class AsyncLearnMixin:
    """AsyncClient's predictor methods."""

    if TYPE_CHECKING:

        async def _request(
            self, method: str, path: str, body: dict[str, Any] | None = None, **kwargs: Any
        ) -> Any: ...

    async def learn_stats(self) -> dict[str, Any]:
        return dict(await self._request("GET", "/v1/learn/stats"))

    async def learn_train(self) -> dict[str, Any]:
        return dict(await self._request("POST", "/v1/learn/train"))
