"""Anomaly alerts and questions about the system, from the SDK: mixins for `Client`
and `AsyncClient`.

client.alerts()                  # alerts of the processes you may see, newest first
client.alerts(active_only=True)  # only those not cleared
client.clear_alert(3)            # admins: clear it and lift its process's throttle
client.ask("why is it slow?")    # {"answer", "facts", "data", ...}
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llmos.sdk._wire import data_of


def _ask_body(question: str, model: str | None, max_tokens: int | None) -> dict[str, Any]:
    body: dict[str, Any] = {"question": question}
    if model is not None:
        body["model"] = model
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    return body


class AlertsMixin:
    """Client's alert and ask methods (sync)."""

    if TYPE_CHECKING:

        def _request(
            self, method: str, path: str, body: dict[str, Any] | None = None, **kwargs: Any
        ) -> Any: ...

    def alerts(self, active_only: bool = False, limit: int = 100) -> list[dict[str, Any]]:
        """Anomaly alerts (id, pid, owner, kind, message, value, threshold, action,
        created_at, cleared_at), newest first."""
        params = {"active_only": active_only, "limit": limit}
        return data_of(self._request("GET", "/v1/alerts", params=params))

    def clear_alert(self, alert_id: int) -> dict[str, Any]:
        """Clear an alert and lift its process's throttle (admins)."""
        return dict(self._request("POST", f"/v1/alerts/{int(alert_id)}/clear"))

    def ask(
        self, question: str, *, model: str | None = None, max_tokens: int | None = None
    ) -> dict[str, Any]:
        """Ask about the system: the model answers from the kernel's figures.
        Returns question, answer, facts (sentences), data (raw figures), model, usage."""
        return dict(self._request("POST", "/v1/ask", _ask_body(question, model, max_tokens)))


class AsyncAlertsMixin:
    """AsyncClient's alert and ask methods."""

    if TYPE_CHECKING:

        async def _request(
            self, method: str, path: str, body: dict[str, Any] | None = None, **kwargs: Any
        ) -> Any: ...

    async def alerts(self, active_only: bool = False, limit: int = 100) -> list[dict[str, Any]]:
        params = {"active_only": active_only, "limit": limit}
        return data_of(await self._request("GET", "/v1/alerts", params=params))

    async def clear_alert(self, alert_id: int) -> dict[str, Any]:
        return dict(await self._request("POST", f"/v1/alerts/{int(alert_id)}/clear"))

    async def ask(
        self, question: str, *, model: str | None = None, max_tokens: int | None = None
    ) -> dict[str, Any]:
        body = _ask_body(question, model, max_tokens)
        return dict(await self._request("POST", "/v1/ask", body))
