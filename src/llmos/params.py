"""All limits and defaults in one place (cf. xv6's param.h), validated at start."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from llmos.errors import InvalidRequest

DEFAULT_PORT = 8710
DEFAULT_HOST = "127.0.0.1"
DEFAULT_SLOTS = 4
DEFAULT_CTX = 2048  # tokens one request sees; the engine's n_ctx is slots * ctx
MAX_BODY_BYTES = 9 * 1024 * 1024  # larger request bodies get 413 (a file upload is up to 8 MiB)
MAX_MESSAGES = 1024
MAX_STOP_STRINGS = 4  # as OpenAI's API
MAX_TOP_LOGPROBS = 20  # as OpenAI's API
MAX_NAME_LEN = 128
MAX_PRIORITY = 39  # priorities are 0..39, higher runs earlier (policies decide)
DEFAULT_PRIORITY = 20
DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
MAX_QUEUE = 4096  # waiting requests, all owners; more get 429 + Retry-After
MAX_QUEUE_PER_OWNER = 1024  # waiting requests of one owner
POLICY_NAMES = ("fair", "fifo", "mlfq", "priority", "rr", "sjf")  # kernel/policies/
DEFAULT_QUANTUM = 32  # rr's quantum and mlfq's base quantum, in generated tokens
MAX_FILE_BYTES = 8 * 1024 * 1024  # one stored file; larger writes get 413
FS_QUOTA_BYTES = 256 * 1024 * 1024  # per owner: the sum of its live files' sizes
MAX_FILES = 100_000  # live files per owner
MAX_FILE_VERSIONS = 100  # versions kept per path (deletions count); older ones are pruned
MAX_PATH_BYTES = 1024  # a file path, UTF-8
MAX_SEGMENT_BYTES = 255  # one '/'-separated part of a path, UTF-8
MAX_SEARCH_LIMIT = 100  # results one fs.search may return
MAX_QUERY_CHARS = 1024
FS_PASSAGE_CHARS = 8192  # search indexes text in passages; a query's words must share one


def default_home() -> Path:
    return Path(os.environ.get("LLMOS_HOME") or Path.home() / ".llmos")


@dataclass
class Settings:
    """Everything `llmos up` can be told. Passed in, never global."""

    home: Path = field(default_factory=default_home)
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    model_path: Path | None = None  # a GGUF for the embedded engine; None = default model
    model_name: str | None = None  # the id clients send as `model`; None = derived
    device_url: str | None = None  # an OpenAI-compatible server instead of an embedded engine
    device_api_key: str | None = None
    slots: int = DEFAULT_SLOTS
    ctx: int = DEFAULT_CTX
    threads: int = field(default_factory=lambda: max(1, os.cpu_count() or 1))
    policy: str = "fifo"
    quantum: int = DEFAULT_QUANTUM
    max_queue: int = MAX_QUEUE
    max_queue_per_owner: int = MAX_QUEUE_PER_OWNER
    admin_token: str | None = field(default_factory=lambda: os.environ.get("LLMOS_TOKEN"))
    max_body_bytes: int = MAX_BODY_BYTES

    def validate(self) -> None:
        """Raise InvalidRequest naming the first bad setting."""
        if not 1 <= self.slots <= 256:
            raise InvalidRequest("slots must be between 1 and 256", param="slots")
        if not 64 <= self.ctx <= 1 << 20:
            raise InvalidRequest("ctx must be between 64 and 1048576 tokens", param="ctx")
        if not 1 <= self.threads <= 256:
            raise InvalidRequest("threads must be between 1 and 256", param="threads")
        if not 1 <= self.quantum <= 1 << 20:
            raise InvalidRequest("quantum must be between 1 and 1048576 tokens", param="quantum")
        if not 1 <= self.max_queue_per_owner <= self.max_queue:
            raise InvalidRequest(
                "max_queue_per_owner must be between 1 and max_queue", param="max_queue_per_owner"
            )
        if self.policy not in POLICY_NAMES:
            raise InvalidRequest(
                f"unknown policy {self.policy!r}; choose one of {', '.join(POLICY_NAMES)}",
                param="policy",
            )
        if not 0 <= self.port <= 65535:
            raise InvalidRequest("port must be between 0 and 65535", param="port")
        if self.model_path is not None and self.device_url is not None:
            raise InvalidRequest(
                "give either a model path or a device URL, not both", param="model"
            )
        if self.model_path is not None and not self.model_path.is_file():
            raise InvalidRequest(f"model file not found: {self.model_path}", param="model")
        if self.device_url is not None and not self.device_url.startswith(("http://", "https://")):
            raise InvalidRequest(
                "device URL must start with http:// or https://", param="device_url"
            )

    @property
    def db_path(self) -> Path:
        return self.home / "llmos.db"
