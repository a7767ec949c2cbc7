"""An engine's own figures, read over its HTTP endpoints: llama.cpp's `/metrics`
(Prometheus text: counters such as `tokens_predicted_total`, gauges such as
`requests_processing`) and `/slots` (the KV cache each slot holds), or vLLM's
`/metrics` (`kv_cache_usage_perc`).

This llama.cpp build no longer exports its KV-cache use in `/metrics`, so it is
derived from `/slots`: each slot's `n_prompt_tokens` counts the tokens it holds in the
KV cache (prompt and tokens generated so far, checked against a running generation),
and `n_ctx` is the slot's share of the KV size. An idle slot keeps its last sequence
for prefix reuse; those tokens are told apart (`kv_cache_reusable_tokens`) so that
`kv_cache_usage_ratio` means what vLLM's `kv_cache_usage_perc` does: the share held
by running sequences.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

TIMEOUT_S = 2.0  # a busy engine answers late; the next reading will do
_PREFIXES = ("llamacpp:", "vllm:")
_VLLM_KV = ("kv_cache_usage_perc", "gpu_cache_usage_perc")  # new name, old name
# Statuses meaning "this endpoint is not served here": stop asking.
_ABSENT = frozenset({401, 403, 404, 405, 501})


def parse_metrics(text: str) -> dict[str, float]:
    """Unlabelled counters and gauges by sample name, the engine's prefix dropped;
    vLLM's KV gauge (labelled by model) as `kv_cache_usage_ratio`, the largest."""
    out: dict[str, float] = {}
    kv: list[float] = []
    try:
        families = list(text_string_to_metric_families(text))
    except ValueError:  # not Prometheus text
        return {}
    for family in families:
        if family.type not in ("counter", "gauge"):
            continue
        for s in family.samples:
            name = s.name
            for prefix in _PREFIXES:
                name = name.removeprefix(prefix)
            if name.endswith("_created"):
                continue
            if name in _VLLM_KV:
                kv.append(float(s.value))
            elif not s.labels:
                out[name] = float(s.value)
    if kv:
        out["kv_cache_usage_ratio"] = max(kv)
    return out


def parse_slots(slots: Any) -> dict[str, float]:
    """KV-cache use from llama.cpp's `/slots` (see the module's docstring)."""
    if not isinstance(slots, list) or not slots:
        return {}
    size = active = reusable = busy = 0
    for slot in slots:
        if not isinstance(slot, dict):
            return {}
        n_ctx = slot.get("n_ctx")
        held = slot.get("n_prompt_tokens") or 0
        if not isinstance(n_ctx, int) or not isinstance(held, int):
            return {}
        size += n_ctx
        if slot.get("is_processing"):
            busy += 1
            active += held
        else:
            reusable += held
    if size <= 0:
        return {}
    return {
        "kv_cache_usage_ratio": min(1.0, active / size),
        "kv_cache_tokens": float(active),
        "kv_cache_reusable_tokens": float(reusable),
        "kv_cache_size_tokens": float(size),
        "n_ctx_slot": float(size // len(slots)),
        "slots_processing": float(busy),
    }


class EngineProbe:
    """Reads an engine's `/metrics` and `/slots` through the driver's HTTP client (which
    carries the engine's API key). An endpoint the engine does not serve is asked once."""

    def __init__(self, http: httpx.AsyncClient, root: str = "") -> None:
        self.http = http
        self.root = root
        self.absent: set[str] = set()

    async def read(self) -> dict[str, float]:
        out: dict[str, float] = {}
        text = await self._get("/metrics")
        if text is not None:
            out.update(parse_metrics(text))
        body = await self._get("/slots")
        if body is not None:
            with contextlib.suppress(ValueError):  # not JSON
                out.update(parse_slots(json.loads(body)))
        return out

    async def _get(self, path: str) -> str | None:
        if path in self.absent:
            return None
        try:
            r = await self.http.get(self.root + path, timeout=TIMEOUT_S)
        except (httpx.HTTPError, RuntimeError):  # busy, gone, or the client closed
            return None
        if r.status_code in _ABSENT:
            self.absent.add(path)
            return None
        return r.text if r.status_code == 200 else None
