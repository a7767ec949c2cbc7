"""llmos: an operating system for LLM workloads."""

from llmos.errors import LlmosError
from llmos.params import Settings

__all__ = ["LlmosError", "Settings"]
