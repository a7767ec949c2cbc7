"""Devices from settings: an embedded llama.cpp (default model unless told; with
`mmproj` it has vision), an OpenAI-compatible server, or the mock engine (`llmos up
--device mock`); the last two with the capabilities `device_capabilities` says."""

from __future__ import annotations

from llmos.devices.base import Device
from llmos.devices.catalog import default_model_path
from llmos.devices.llamacpp import LlamaCppDevice
from llmos.devices.mock import MockDevice
from llmos.devices.openai_http import OpenAIHttpDevice
from llmos.params import DEFAULT_MODEL_NAME, Settings


def build_devices(settings: Settings) -> list[Device]:
    caps = settings.device_capabilities or ("text",)
    if settings.mock_device:
        model = settings.model_name or "mock"
        return [
            MockDevice(
                model=model, slots=settings.slots, context_length=settings.ctx, capabilities=caps
            )
        ]
    if settings.device_url:
        return [
            OpenAIHttpDevice(
                settings.device_url,
                api_key=settings.device_api_key,
                model=settings.model_name,
                slots=settings.slots,
                ctx=settings.ctx,
                capabilities=caps,
            )
        ]
    path = settings.model_path or default_model_path()
    name = settings.model_name or (DEFAULT_MODEL_NAME if settings.model_path is None else None)
    return [
        LlamaCppDevice(
            path,
            slots=settings.slots,
            ctx=settings.ctx,
            threads=settings.threads,
            model=name,
            mmproj=settings.mmproj,
        )
    ]
