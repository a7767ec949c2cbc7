"""Device drivers: one interface, several engines."""

from llmos.devices.base import Device
from llmos.devices.catalog import default_model_path
from llmos.devices.llamacpp import LlamaCppDevice
from llmos.devices.mock import MockDevice
from llmos.devices.openai_http import OpenAIHttpDevice

__all__ = ["Device", "LlamaCppDevice", "MockDevice", "OpenAIHttpDevice", "default_model_path"]
